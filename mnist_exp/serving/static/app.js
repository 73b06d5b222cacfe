// Draw on #pad (mouse, pen, touch), POST the PNG to /predict, show the digit, the ten
// probabilities and the 28x28 image the model received.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const $ = (id) => document.getElementById(id);
let drawing = false;
let inked = false;
let timer = null;

function clearPad() {
  clearTimeout(timer);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  $("digit").textContent = "?";
  $("confidence").textContent = "Draw a digit, then Predict.";
  $("error").textContent = "";
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

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  inked = true;
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
  try {
    const response = await fetch("/predict", { method: "POST", body, headers });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
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
  $("digit").textContent = answer.digit;
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
  for (let digit = 0; digit < 10; digit++) {
    const p = probabilities ? probabilities[digit] : 0;
    const item = document.createElement("li");
    item.className = digit === top ? "top" : "";
    item.setAttribute("aria-label", `${digit}: ${(p * 100).toFixed(1)}%`);
    item.innerHTML = `<span>${digit}</span><span class="track"><span class="fill"
      style="display:block;width:${(p * 100).toFixed(1)}%"></span></span>
      <span class="value">${(p * 100).toFixed(1)}%</span>`;
    $("bars").append(item);
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
  $("model").textContent = `Model: ${model.model}${run}${accuracy}`;
}).catch(() => { $("model").textContent = "Model information unavailable."; });

clearPad();
