"use strict";
// The demo page of one model: generate, show each image with a live expiry countdown.
const modelName = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function formatLeft(seconds) {
  if (seconds >= 3600) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  if (seconds >= 60) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  return seconds + " s";
}

function showImage(url, expiresAt, seed) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = url;
  img.alt = "Generated image, seed " + seed;
  const caption = document.createElement("figcaption");
  figure.append(img, caption);
  $("results").prepend(figure);
  const tick = () => {
    const left = Math.ceil(expiresAt - Date.now() / 1000);
    if (left <= 0) {
      figure.classList.add("expired");
      img.removeAttribute("src");
      caption.textContent = "This image has expired and was deleted.";
      return;
    }
    caption.textContent = "Seed " + seed + " · expires in " + formatLeft(left);
    setTimeout(tick, 1000);
  };
  tick();
}

async function loadModel() {
  const response = await fetch("/v1/models/" + encodeURIComponent(modelName));
  if (!response.ok) {
    setStatus("This model does not exist.", true);
    $("generate").disabled = true;
    return;
  }
  const model = await response.json();
  document.title = model.id + " · imagegen";
  $("model-name").textContent = model.id;
  $("model-description").textContent = model.description;
  $("prompt").value = model.examples[0] || "";
  for (const size of model.sizes) {
    const option = new Option(size, size, size === model.default_size, size === model.default_size);
    $("size").append(option);
  }
  $("n").max = model.limits.max_n;
  $("steps").value = model.defaults.num_inference_steps;
  $("steps").max = model.limits.max_inference_steps;
  $("guidance").value = model.defaults.guidance_scale;
  for (const example of model.examples) addHint(example, "Example: ");
  if (model.vocabulary) {
    for (const [group, words] of Object.entries(model.vocabulary)) {
      const line = document.createElement("div");
      line.textContent = group + ": " + words.join(", ");
      $("hints").append(line);
    }
  }
}

function addHint(text, prefix) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  button.setAttribute("aria-label", prefix + text);
  button.addEventListener("click", () => { $("prompt").value = text; $("prompt").focus(); });
  $("hints").append(button);
}

async function loadPrivacy() {
  const response = await fetch("/v1/privacy");
  const privacy = await response.json();
  $("privacy-note").textContent = "Your prompt is never stored or logged. Images are kept for "
    + formatLeft(privacy.outputs.default_ttl_seconds) + " at most, then deleted.";
}

function requestBody() {
  const body = { model: modelName, prompt: $("prompt").value, size: $("size").value,
                 n: Number($("n").value || 1) };
  if ($("negative_prompt").value) body.negative_prompt = $("negative_prompt").value;
  if ($("steps").value) body.num_inference_steps = Number($("steps").value);
  if ($("guidance").value) body.guidance_scale = Number($("guidance").value);
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

$("generate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("generate").disabled = true;
  setStatus("Generating…");
  try {
    const response = await fetch("/v1/images/generations", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
    });
    const body = await response.json();
    if (!response.ok) {
      const busy = response.status === 429 ? " The queue is full; try again in a moment." : "";
      setStatus((body.error ? body.error.message : "Failed.") + busy, true);
      return;
    }
    for (const image of body.data) showImage(image.url, image.expires_at, body.seed);
    const ignored = body.ignored_words ? " (" + body.ignored_words + " unknown words ignored)" : "";
    setStatus("Done in " + body.usage.device_seconds.toFixed(2) + " device seconds" + ignored + ".");
  } catch (error) {
    setStatus("The server could not be reached.", true);
  } finally {
    $("generate").disabled = false;
  }
});

loadModel();
loadPrivacy();
