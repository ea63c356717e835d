// The shiftsr page: send the image to /api/upscale/stream, follow its progress, show and compare the result.
"use strict";

const $ = (id) => document.getElementById(id);
const CROP = 96; // output pixels on each side of a crop
const MIN_VIEW = 480; // the compare view is at least this wide, whatever the output size
let file = null;
let limits = {};
let offers = {};
let shown = null; // {output, input, spread} image elements of the result on screen
let cropCentre = null; // [x, y] in output pixels

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

async function loadModels() {
  const reply = await fetch("/api/models");
  const data = await reply.json();
  limits = data.limits;
  const groups = { preset: "presets", model: "bundled models", folder: "model folder" };
  for (const [kind, label] of Object.entries(groups)) {
    const entries = data.models.filter((offer) => offer.kind === kind);
    if (!entries.length) continue;
    const group = document.createElement("optgroup");
    group.label = label;
    for (const offer of entries) {
      offers[offer.name] = offer;
      group.append(new Option(offer.name, offer.name, false, offer.name === data.default));
    }
    $("model").append(group);
  }
  describeModel();
}

function describeModel() {
  const offer = offers[$("model").value];
  if (!offer) return;
  const s = offer.sampler;
  $("model-note").textContent = `${offer.description}. Defaults: x${offer.scale}, ${s.method}, ${s.steps} steps` +
    (s.order ? `, order ${s.order}` : "") + `, ${s.samples} sample` +
    (s.samples === 1 ? "" : "s");
  $("scale").placeholder = offer.scale;
  $("steps").placeholder = s.steps;
  $("samples").placeholder = s.samples;
}

function chooseFile(chosen) {
  if (!chosen) return;
  if (limits.upload_bytes && chosen.size > limits.upload_bytes) {
    setStatus(`${chosen.name} is ${chosen.size.toLocaleString()} bytes, over this server's ` +
      `${limits.upload_bytes.toLocaleString()}.`, "error");
    return;
  }
  file = chosen;
  $("drop-text").textContent = `${chosen.name} (${Math.ceil(chosen.size / 1024)} KB)`;
  $("run").disabled = false;
  setStatus("Ready.", "ready");
}

function query() {
  const params = new URLSearchParams({ model: $("model").value, name: file.name });
  const bySize = document.querySelector("input[name=size]:checked").value;
  const fields = { steps: $("steps").value, samples: $("samples").value, seed: $("seed").value,
                   [bySize]: $(bySize).value };
  for (const [key, value] of Object.entries(fields)) if (value.trim()) params.set(key, value.trim());
  return params;
}

async function* events(reply) {
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const text = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (text.trim()) yield JSON.parse(text);
    }
  }
}

async function upscale(submit) {
  submit.preventDefault();
  if (!file) return;
  $("run").disabled = true;
  $("progress").value = 0;
  setStatus("Uploading…", "running");
  try {
    const reply = await fetch("/api/upscale/stream?" + query(), { method: "POST", body: file,
      headers: { "Content-Type": "application/octet-stream" } });
    if (!reply.ok) {
      const refusal = await reply.json().catch(() => ({ error: reply.statusText }));
      throw new Error(refusal.error);
    }
    for await (const event of events(reply)) {
      if (event.event === "queued") {
        setStatus(event.ahead ? `Waiting: ${event.ahead} job(s) ahead.` : "Upscaling…", "running");
      } else if (event.event === "progress") {
        $("progress").value = event.fraction;
        setStatus(`Upscaling… ${Math.round(event.fraction * 100)}%`, "running");
      } else if (event.event === "error") {
        throw new Error(event.error);
      } else if (event.event === "done") {
        await showResult(event);
      }
    }
  } catch (error) {
    setStatus(error.message, "error");
  } finally {
    $("run").disabled = !file;
  }
}

function blobUrl(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
}

function loaded(img, base64) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  return new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the browser could not show the result"));
    img.src = blobUrl(base64);
  });
}

async function showResult(event) {
  const hasSpread = Boolean(event.uncertainty);
  await Promise.all([loaded($("output"), event.image), loaded($("input"), event.input),
                     ...(hasSpread ? [loaded($("spread"), event.uncertainty)] : [])]);
  shown = { output: $("output"), input: $("input"), spread: hasSpread ? $("spread") : null };
  const r = event.record;
  const width = $("output").naturalWidth, height = $("output").naturalHeight;
  $("output").style.width = `${Math.max(width, MIN_VIEW)}px`;
  for (const id of ["compare", "slider", "hint", "crops", "download"]) $(id).hidden = false;
  $("spread-figure").hidden = $("crop-spread-figure").hidden = !hasSpread;
  if (hasSpread) {
    $("spread-caption").textContent = `Whole image: the per-pixel standard deviation of the ${r.samples} ` +
      `samples, black 0 to light yellow 0.1 of the intensity range; mean ${r.std_mean.toFixed(4)}.`;
  }
  $("download").href = $("output").src;
  $("download").download = event.download;
  $("download").textContent = `Download ${event.download}`;
  $("record").textContent = `${r.size_in.join("x")} -> ${r.size_out.join("x")} in ${r.seconds} s\n` +
    `${r.method}, ${r.steps} steps${r.order ? `, order ${r.order}` : ""}, ${r.samples} sample(s), ` +
    `seed ${r.seed}, ${r.nfe} network calls`;
  cropCentre = [width / 2, height / 2];
  slide();
  drawCrops();
  setStatus(`Done: ${width}x${height}.`, "done");
}

function slide() {
  const at = $("slider").value;
  $("input").style.clipPath = `inset(0 ${100 - at}% 0 0)`;
  $("divider").style.left = `${at}%`;
}

function pickCrop(click) {
  if (!shown) return;
  const box = $("output").getBoundingClientRect();
  cropCentre = [(click.clientX - box.left) / box.width * $("output").naturalWidth,
                (click.clientY - box.top) / box.height * $("output").naturalHeight];
  drawCrops();
}

function drawCrops() {
  const out = shown.output;
  const side = Math.min(CROP, out.naturalWidth, out.naturalHeight);
  const clampTo = (value, size) => Math.max(0, Math.min(size - side, Math.round(value - side / 2)));
  const x = clampTo(cropCentre[0], out.naturalWidth), y = clampTo(cropCentre[1], out.naturalHeight);
  const sx = shown.input.naturalWidth / out.naturalWidth, sy = shown.input.naturalHeight / out.naturalHeight;
  const draw = (canvas, img, fx, fy) => {
    canvas.width = canvas.height = side;
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.drawImage(img, x * fx, y * fy, side * fx, side * fy, 0, 0, side, side);
  };
  draw($("crop-input"), shown.input, sx, sy);
  draw($("crop-output"), out, 1, 1);
  if (shown.spread) draw($("crop-spread"), shown.spread, 1, 1);
  const scale = out.getBoundingClientRect().width / out.naturalWidth;
  Object.assign($("marker").style, { left: `${x * scale}px`, top: `${y * scale}px`, width: `${side * scale}px`,
                                     height: `${side * scale}px` });
}

function setUp() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => chooseFile($("file").files[0]));
  $("model").addEventListener("change", describeModel);
  $("form").addEventListener("submit", upscale);
  $("slider").addEventListener("input", slide);
  $("compare").addEventListener("click", pickCrop);
  window.addEventListener("resize", () => shown && drawCrops());
  loadModels().catch((error) => setStatus(`Cannot list the models: ${error.message}`, "error"));
}

setUp();
