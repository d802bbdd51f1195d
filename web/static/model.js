"use strict";
// The demo page of one model. A generation is an async job: POST /v1/jobs, then its
// Server-Sent Events drive the progress bar and previews; the result images count down
// to their expiry. Everything is built with textContent (no HTML from the server).

const modelName = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const FIELDS = { prompt: "prompt", negative_prompt: "negative_prompt", num_images: "n",
                 num_inference_steps: "steps", guidance_scale: "guidance", seed: "seed",
                 width: "size", height: "size" };

let job = null;          // { id, source, prompt } while a job is queued or running
let clockSkew = 0;       // this browser's clock minus the server's, in seconds
const countdowns = new Set();

function serverNow() {
  return Date.now() / 1000 - clockSkew;
}

function formatLeft(seconds) {
  const [big, bigUnit, small, smallUnit] = seconds >= 3600
    ? [Math.floor(seconds / 3600), " h", Math.floor((seconds % 3600) / 60), " min"]
    : seconds >= 60 ? [Math.floor(seconds / 60), " min", seconds % 60, " s"] : [0, "", seconds, " s"];
  if (!big) return small + smallUnit;
  return big + bigUnit + (small ? " " + small + smallUnit : "");
}

// A visitor over a limit is told, in words, what happened and how long to wait.
function busyMessage(code, seconds) {
  const wait = seconds > 0 ? formatLeft(seconds) : "a few seconds";
  if (code === "queue_full") {
    return "The queue is full: many people are generating right now. Please try again in "
           + (seconds > 0 ? seconds : "a few") + " seconds.";
  }
  if (code === "quota_exceeded") {
    return "The demo has used its share of the device for today. It renews in " + wait + ".";
  }
  if (code === "rate_limited") {
    return "You are going a little fast for the demo. Please try again in " + wait + ".";
  }
  return "The service is busy. Please try again in " + wait + ".";
}

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function showFieldError(param, message) {
  const field = $(FIELDS[param] || param);
  if (param === "prompt") {
    $("prompt-error").textContent = message;
    $("prompt-error").hidden = false;
  }
  if (field) {
    if (field.closest("details")) field.closest("details").open = true;
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

function clearFieldErrors() {
  $("prompt-error").hidden = true;
  for (const field of document.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
}

// --- The model, its examples and vocabulary, and the privacy note -----------------------

async function loadModel() {
  const response = await fetch("/v1/models/" + encodeURIComponent(modelName));
  if (!response.ok) {
    setStatus("This model does not exist.", "error");
    $("generate").disabled = true;
    return;
  }
  const model = await response.json();
  document.title = model.id + " · imagegen";
  $("model-name").textContent = model.id;
  $("model-description").textContent = model.description;
  if (!$("prompt").value) $("prompt").value = model.examples[0] || "";
  for (const size of model.sizes) {
    $("size").append(new Option(size.replace("x", " × "), size, false, size === model.default_size));
  }
  $("n").max = model.limits.max_n;
  $("steps").value = model.defaults.num_inference_steps;
  $("steps").max = model.limits.max_inference_steps;
  $("guidance").value = model.defaults.guidance_scale;
  for (const example of model.examples) {
    $("examples").append(chip(example, "Use the example: " + example, () => {
      $("prompt").value = example;
      $("prompt").focus();
    }));
  }
  $("examples").hidden = model.examples.length === 0;
  if (model.vocabulary) showVocabulary(model.vocabulary);
}

function chip(text, label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "chip";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}

function showVocabulary(vocabulary) {
  for (const [group, words] of Object.entries(vocabulary)) {
    const row = document.createElement("div");
    row.className = "chips";
    row.setAttribute("role", "group");
    const name = document.createElement("span");
    name.className = "chips-label";
    name.textContent = group + ":";
    name.id = "vocab-" + group;
    row.setAttribute("aria-labelledby", name.id);
    row.append(name);
    for (const word of words) {
      row.append(chip(word, "Add the word " + word, () => {
        const prompt = $("prompt");
        prompt.value = (prompt.value.trimEnd() + " " + word).trimStart();
      }));
    }
    $("vocabulary-groups").append(row);
  }
  $("vocabulary").hidden = false;
}

async function loadPrivacy() {
  const response = await fetch("/v1/privacy");
  const privacy = await response.json();
  const model = privacy.outputs.models[modelName] || privacy.outputs;
  $("privacy-note").textContent =
    "Your prompt stays in the server's memory only while your image is made: it is never "
    + "written to disk or logged. Your images are kept for "
    + formatLeft(Math.round(model.default_ttl_seconds)) + " (in the " + privacy.store.medium
    + "), then deleted; until then anyone with an image's link can open it, and you can "
    + "delete it sooner. Image files carry no text of your prompt.";
}

// --- Submitting a job and following its events -----------------------------------------

function requestBody() {
  const [width, height] = $("size").value.split("x").map(Number);
  const body = { model: modelName, prompt: $("prompt").value, width, height,
                 num_images: Number($("n").value || 1), previews: true };
  if ($("negative_prompt").value) body.negative_prompt = $("negative_prompt").value;
  if ($("steps").value) body.num_inference_steps = Number($("steps").value);
  if ($("guidance").value) body.guidance_scale = Number($("guidance").value);
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

function setBusy(busy) {
  // Keyboard focus follows the button that can act: a disabled button loses it.
  const [from, to] = busy ? ["generate", "cancel"] : ["cancel", "generate"];
  const hadFocus = document.activeElement === $(from);
  $(to).disabled = false;
  $(from).disabled = true;
  if (hadFocus) $(to).focus();
  $("generate-form").setAttribute("aria-busy", String(busy));
}

async function submitJob() {
  if (job) return;
  clearFieldErrors();
  if (!$("prompt").value.trim()) {
    showFieldError("prompt", "Write a prompt first.");
    return;
  }
  setBusy(true);
  $("job").hidden = false;
  $("preview").hidden = true;
  $("progress").hidden = false;
  $("progress").removeAttribute("value");
  $("step").textContent = "";
  setStatus("Sending…");
  const body = requestBody();
  let response;
  try {
    response = await fetch("/v1/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (error) {
    finish("The server could not be reached. Check your connection and try again.", "error");
    return;
  }
  const date = Date.parse(response.headers.get("Date") || "");
  // The Date header has a 1 s resolution: only a clearly wrong clock is corrected.
  const skew = (Date.now() - date) / 1000;
  if (!Number.isNaN(skew) && Math.abs(skew) > 2) clockSkew = skew;
  const answer = await response.json().catch(() => ({}));
  if (response.status === 429) {
    finish(busyMessage((answer.error || {}).code, Number(response.headers.get("Retry-After"))),
           "error busy");
    return;
  }
  if (!response.ok) {
    const error = answer.error || {};
    finish(error.message || "The request failed.", "error");
    if (error.param) showFieldError(error.param, error.message);
    return;
  }
  job = { id: answer.id, prompt: body.prompt };
  follow(answer.events_url);
}

function follow(url) {
  const source = new EventSource(url);
  job.source = source;
  source.addEventListener("queued", (e) => {
    const { position } = JSON.parse(e.data);
    setStatus(position === 1 ? "You are next in the queue." : "Waiting in the queue: position " + position + ".");
  });
  source.addEventListener("started", () => {
    setStatus("Generating…");
    $("progress").value = 0;
  });
  source.addEventListener("progress", (e) => {
    const { step, total, preview } = JSON.parse(e.data);
    $("progress").max = total;
    $("progress").value = step;
    // The bar and the step line move on every step; the live status only on phase changes.
    $("step").textContent = "Step " + step + " of " + total;
    if (preview) {
      $("preview").src = preview;
      $("preview").alt = "Preview after step " + step;
      $("preview").hidden = false;
    }
  });
  source.addEventListener("succeeded", (e) => {
    const result = JSON.parse(e.data);
    result.images.forEach((image, index) => showImage(image, result.seed, index, job.prompt));
    const count = result.images.length === 1 ? "Your image is ready" : result.images.length + " images are ready";
    finish(count + " (seed " + result.seed + ", " + result.usage.device_seconds.toFixed(2) + " s of device time).", "done");
  });
  source.addEventListener("failed", (e) => {
    finish(JSON.parse(e.data).error.message, "error");
  });
  source.addEventListener("canceled", () => finish("Canceled. Nothing was kept.", ""));
  source.onerror = () => {
    // The browser reconnects by itself (resuming after the last event) unless it gave up.
    if (source.readyState === EventSource.CLOSED) finish("Lost contact with the server; the job may still finish.", "error");
  };
}

function finish(message, kind) {
  if (job && job.source) job.source.close();
  job = null;
  setBusy(false);
  setStatus(message, kind);
  $("preview").hidden = true;
  $("step").textContent = "";
  $("progress").hidden = true;
}

async function cancelJob() {
  if (!job || job.canceling) return;
  job.canceling = true;
  setStatus("Canceling…");
  const response = await fetch("/v1/jobs/" + encodeURIComponent(job.id), { method: "DELETE" });
  if (response.status === 409) setStatus("Too late to cancel: the job had already finished.");
  // Otherwise the "canceled" event ends the job on the page.
}

// --- Result images and their expiry ----------------------------------------------------

function showImage(image, seed, index, prompt) {
  const figure = document.createElement("figure");
  figure.className = "result";
  const img = document.createElement("img");
  img.src = image.url;
  img.alt = "Generated image " + (index + 1) + " for: " + prompt;
  const caption = document.createElement("figcaption");
  const left = document.createElement("p");
  left.className = "expiry";
  const actions = document.createElement("div");
  actions.className = "actions";
  const download = document.createElement("a");
  download.href = image.url;
  download.download = "imagegen-" + seed + "-" + (index + 1) + ".png";
  download.textContent = "Download";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "link";
  remove.textContent = "Delete now";
  actions.append(download, remove);
  caption.append(left, actions);
  figure.append(img, caption);
  $("results").prepend(figure);

  const entry = { figure, img, left, expiresAt: image.expires_at, seed };
  countdowns.add(entry);
  img.addEventListener("error", () => gone(entry, "This image is no longer available: it expired or was deleted."));
  remove.addEventListener("click", async () => {
    const response = await fetch(image.url, { method: "DELETE" });
    gone(entry, response.ok || response.status === 404 ? "Deleted from the server." : "Could not delete it; try again.");
  });
  tick(entry);
}

function tick(entry) {
  const left = Math.ceil(entry.expiresAt - serverNow());
  if (left <= 0) {
    gone(entry, "This image has expired and was deleted from the server.");
    return;
  }
  entry.left.textContent = "Seed " + entry.seed + " · deleted in " + formatLeft(left);
}

function gone(entry, message) {
  countdowns.delete(entry);
  entry.figure.classList.add("expired");
  entry.img.removeAttribute("src");
  entry.img.hidden = true;
  entry.left.textContent = message;
  entry.left.setAttribute("role", "status");
  for (const action of entry.figure.querySelectorAll(".actions")) action.remove();
}

setInterval(() => { for (const entry of [...countdowns]) tick(entry); }, 1000);

$("generate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submitJob();
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    submitJob();
  }
});
$("cancel").addEventListener("click", cancelJob);

loadModel();
loadPrivacy();
