// Draw on #pad (mouse, pen, touch), POST the PNG to /predict, show the class, its
// probabilities and the 28x28 image the model received; where the server collects, a button per
// class saves the drawing under its true label (POST /collect?label=...).
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const $ = (id) => document.getElementById(id);
let drawing = false;
let inked = false;
let timer = null;
let classes = [..."0123456789"];  // the model's, once /model answers
let last = null;  // the last prediction's request, to save under its true label

function clearPad() {
  clearTimeout(timer);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  $("digit").textContent = "?";
  $("confidence").textContent = "Draw a digit, then Predict.";
  $("error").textContent = "";
  $("saved").textContent = "";
  forget();
  showBars(null);
  $("seen").getContext("2d").clearRect(0, 0, 28, 28);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

function later(delay) {  // predict as you draw, once the pen has rested for `delay` ms
  clearTimeout(timer);
  timer = setTimeout(predict, delay);
}

function forget() {  // a new drawing or request: nothing to save until it is answered
  last = null;
  $("collect").hidden = true;
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  inked = true;
  forget();
  pad.setPointerCapture(event.pointerId);
  ctx.lineWidth = 20;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  ctx.beginPath();
  ctx.moveTo(...point(event));
  ctx.lineTo(...point(event));
  ctx.stroke();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  ctx.lineTo(...point(event));
  ctx.stroke();
  later(600);
});
for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => {
    if (!drawing) return;
    drawing = false;
    later(250);
  });
}
pad.addEventListener("keydown", (event) => {
  if (event.key === "Enter") predict();
  if (event.key === "Escape") clearPad();
});

async function send(body, headers) {
  $("error").textContent = "";
  forget();
  try {
    const response = await fetch("/predict", { method: "POST", body, headers });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    last = { body, headers };
    show(answer);
  } catch (error) {
    $("error").textContent = error.message;
  }
}

function predict() {
  clearTimeout(timer);
  if (!inked) {
    $("error").textContent = "The canvas is empty: draw a digit first.";
    return;
  }
  send(JSON.stringify({ image: pad.toDataURL("image/png") }),
       { "Content-Type": "application/json" });
}

function show(answer) {
  $("digit").textContent = answer.label;
  $("digit").classList.toggle("long", answer.label.length > 2);
  $("collect").hidden = !$("labels").childElementCount;
  $("saved").textContent = "";
  $("confidence").textContent = `${(answer.confidence * 100).toFixed(1)}% sure`;
  showBars(answer.probabilities);
  const seen = $("seen").getContext("2d");
  const pixels = seen.createImageData(28, 28);
  answer.image.flat().forEach((value, i) => {
    pixels.data.set([value * 255, value * 255, value * 255, 255], i * 4);
  });
  seen.putImageData(pixels, 0, 0);
}

function showBars(probabilities) {
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  $("bars").innerHTML = "";
  classes.forEach((name, i) => {
    const p = probabilities ? probabilities[i] : 0;
    const item = document.createElement("li");
    item.className = i === top ? "top" : "";
    item.setAttribute("aria-label", `${name}: ${(p * 100).toFixed(1)}%`);
    item.innerHTML = `<span></span><span class="track"><span class="fill"
      style="display:block;width:${(p * 100).toFixed(1)}%"></span></span>
      <span class="value">${(p * 100).toFixed(1)}%</span>`;
    item.firstChild.textContent = name;  // a class name is text, never markup
    $("bars").append(item);
  });
}

async function save(label) {
  if (!last) return;
  $("error").textContent = "";
  try {
    const headers = { ...last.headers, "X-Collect": "1" };
    const response = await fetch(`/collect?label=${encodeURIComponent(label)}`,
                                 { method: "POST", body: last.body, headers });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    forget();  // saved once: Predict again to save it again
    $("saved").textContent = `Saved as ${answer.saved}`;
  } catch (error) {
    $("error").textContent = error.message;
  }
}

function labelButtons() {
  $("labels").innerHTML = "";
  for (const name of classes) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = name;
    button.setAttribute("aria-label", `It is ${name}`);
    button.addEventListener("click", () => save(name));
    $("labels").append(button);
  }
}

$("predict").addEventListener("click", predict);
$("clear").addEventListener("click", clearPad);
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  send(form, {});
});

fetch("/model").then((r) => r.json()).then((model) => {
  const accuracy = model.test_accuracy == null ? ""
    : `, test accuracy ${(model.test_accuracy * 100).toFixed(2)}%`;
  const run = model.run_id ? ` — run ${model.run_name || model.run_id.slice(0, 8)}` : "";
  const chosen = model.chosen ? ` (chosen as ${model.chosen})` : "";
  $("model").textContent = `Model: ${model.model}${run}${accuracy}${chosen}`;
  classes = model.classes || classes;
  if (model.collect) labelButtons();
  showBars(null);
}).catch(() => { $("model").textContent = "Model information unavailable."; });

clearPad();
