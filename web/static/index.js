"use strict";
// The model list, built with textContent only (names come from the operator's config).
(async () => {
  const list = document.getElementById("models");
  let models;
  try {
    const response = await fetch("/v1/models");
    models = (await response.json()).data;
  } catch (error) {
    list.replaceChildren(Object.assign(document.createElement("li"),
      { textContent: "The model list could not be loaded; reload the page to try again." }));
    return;
  }
  list.replaceChildren();
  for (const model of models) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = "/models/" + encodeURIComponent(model.id);
    link.textContent = model.id;
    const about = document.createElement("p");
    about.textContent = model.description || "";
    const sizes = document.createElement("p");
    sizes.textContent = "Sizes: " + model.sizes.join(", ");
    item.append(link, about, sizes);
    list.append(item);
  }
  list.setAttribute("aria-busy", "false");
})();
