"use strict";
// The model list, built with textContent only (names come from the operator's config).
(async () => {
  const list = document.getElementById("models");
  const response = await fetch("/v1/models");
  const body = await response.json();
  list.replaceChildren();
  for (const model of body.data) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = "/models/" + encodeURIComponent(model.id);
    link.textContent = model.id;
    const about = document.createElement("span");
    about.textContent = " " + (model.description || "");
    item.append(link, about);
    list.append(item);
  }
})();
