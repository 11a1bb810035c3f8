// The search page: a thin client of the /v1 API. The query (text, like, filters, weights,
// fusion, page) lives in the URL so that a result page can be shared and reloaded; an uploaded
// image is kept in sessionStorage (too large for a URL) and marked in the URL by img=1.
"use strict";

const API = "/v1";
const ATTRS = ["gender", "articleType", "baseColour", "season", "year", "usage"];
const FACET_VALUES = 12;
const $ = (id) => document.getElementById(id);

const state = {
  text: "",
  like: null,          // product id
  likeName: null,
  image: null,         // data URL of the query image
  filters: {},         // field -> array of values (OR inside a field, AND across fields)
  wImage: 0.5,
  fusion: "weighted",
  page: 1,
  size: 24,
};
let info = null;
let apiKey = sessionStorage.getItem("clipy.key");
let searchSeq = 0;
const blobUrls = [];

// -- the URL ---------------------------------------------------------------------------------

function toURL() {
  const p = new URLSearchParams();
  if (state.text) p.set("q", state.text);
  if (state.like) p.set("like", state.like);
  if (state.image) p.set("img", "1");
  for (const [field, values] of Object.entries(state.filters)) {
    if (values.length) p.append("f", `${field}=${values.join(",")}`);
  }
  if (state.wImage !== 0.5) p.set("wi", String(state.wImage));
  if (state.fusion !== "weighted") p.set("fusion", state.fusion);
  if (state.page > 1) p.set("page", String(state.page));
  if (state.size !== 24) p.set("n", String(state.size));
  return p.toString() ? `?${p}` : location.pathname;
}

function fromURL() {
  const p = new URLSearchParams(location.search);
  state.text = p.get("q") || "";
  state.like = p.get("like");
  state.image = p.get("img") ? sessionStorage.getItem("clipy.image") : null;
  state.filters = {};
  for (const f of p.getAll("f")) {
    const at = f.indexOf("=");
    if (at > 0) state.filters[f.slice(0, at)] = f.slice(at + 1).split(",").filter(Boolean);
  }
  const wi = Number.parseFloat(p.get("wi"));
  state.wImage = Number.isFinite(wi) ? Math.min(1, Math.max(0, wi)) : 0.5;
  state.fusion = p.get("fusion") || "weighted";
  state.page = Math.max(1, Number.parseInt(p.get("page"), 10) || 1);
  state.size = [12, 24, 48].includes(Number(p.get("n"))) ? Number(p.get("n")) : 24;
}

function syncControls() {
  $("q").value = state.text;
  $("weight").value = String(state.wImage);
  $("fusion").value = state.fusion;
  $("page-size").value = String(state.size);
  showWeights();
  renderChips();
}

// -- the API ---------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiKey) headers["X-API-Key"] = apiKey;
  const response = await fetch(API + path, { ...options, headers });
  if (response.status === 401) {
    await askKey();
    return api(path, options);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function askKey() {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    dialog.addEventListener("close", () => {
      apiKey = $("key-input").value;
      sessionStorage.setItem("clipy.key", apiKey);
      resolve();
    }, { once: true });
    dialog.showModal();
  });
}

function filterStrings(except) {
  return Object.entries(state.filters)
    .filter(([field, values]) => field !== except && values.length)
    .map(([field, values]) => `${field}=${values.join(",")}`);
}

function hasQuery() {
  return Boolean(state.text || state.like || state.image);
}

// -- searching -------------------------------------------------------------------------------

async function search({ push = true } = {}) {
  if (push) history.pushState(null, "", toURL());
  renderChips();
  refreshFacets();
  const seq = ++searchSeq;
  const status = $("status");
  if (!hasQuery()) {
    clearResults();
    status.textContent = info ? `${info.products.toLocaleString()} products. Type a query, or drop a picture.` : "";
    showMessage(null);
    $("page-label").textContent = "";
    return;
  }
  status.textContent = "Searching…";
  document.body.setAttribute("aria-busy", "true");
  const body = {
    k: state.size,
    offset: (state.page - 1) * state.size,
    fusion: state.fusion,
    w_text: Math.round((1 - state.wImage) * 100) / 100,
    w_image: state.wImage,
    filters: filterStrings(),
  };
  if (state.text) body.text = state.text;
  if (state.like) body.like = state.like;
  if (state.image && !state.like) body.image = state.image;
  try {
    const result = await api("/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (seq !== searchSeq) return;  // a newer search has started
    renderResults(result);
  } catch (error) {
    if (seq !== searchSeq) return;
    clearResults();
    status.textContent = "";
    showMessage(`Search failed: ${error.message}`, true);
  } finally {
    if (seq === searchSeq) document.body.removeAttribute("aria-busy");
  }
}

function clearResults() {
  $("results").replaceChildren();
  while (blobUrls.length) URL.revokeObjectURL(blobUrls.pop());
  $("prev").disabled = true;
  $("next").disabled = true;
}

function showMessage(text, isError = false) {
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
  box.classList.toggle("error", isError);
}

function renderResults(result) {
  clearResults();
  const first = result.offset + 1;
  const last = result.offset + result.hits.length;
  const pages = Math.max(1, Math.ceil(Math.min(result.total, info ? info.limits.max_depth : result.total) / state.size));
  $("status").textContent = result.hits.length
    ? `Results ${first}–${last} · ${result.total.toLocaleString()} products match · ${result.took_ms.toFixed(0)} ms`
    : "";
  $("page-label").textContent = result.hits.length ? `Page ${state.page} of ${pages}` : "";
  if (!result.hits.length) {
    showMessage(state.page > 1 ? "No more results on this page." : "No products match this search. Try other words or remove a filter.");
  } else {
    showMessage(null);
  }
  const template = $("card-template");
  const list = $("results");
  const maxText = Math.max(...result.hits.map((h) => Math.abs(h.text_score)), 1e-9);
  const maxImage = Math.max(...result.hits.map((h) => Math.abs(h.image_score)), 1e-9);
  for (const hit of result.hits) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.id = hit.product_id;
    const img = card.querySelector("img");
    img.alt = hit.name;
    setImage(img, hit.image);
    card.querySelector(".name").textContent = hit.name;
    card.querySelector(".attrs").textContent = ATTRS
      .filter((key) => hit.payload[key] !== undefined && hit.payload[key] !== "")
      .map((key) => hit.payload[key]).join(" · ");
    card.querySelector(".s-fused").textContent = hit.score.toFixed(4);
    card.querySelector(".s-text").textContent = hit.text_score.toFixed(3);
    card.querySelector(".s-image").textContent = hit.image_score.toFixed(3);
    card.querySelector(".s-text-bar").style.width = `${Math.max(0, hit.text_score / maxText) * 100}%`;
    card.querySelector(".s-image-bar").style.width = `${Math.max(0, hit.image_score / maxImage) * 100}%`;
    card.querySelector(".s-penalty").textContent = hit.image_penalty.toFixed(3);
    card.querySelector(".penalty-row").hidden = hit.image_penalty === 0;
    const scores = card.querySelector(".scores");
    const toggle = card.querySelector(".score-toggle");
    toggle.addEventListener("click", () => {
      const open = !scores.classList.contains("open");
      scores.classList.toggle("open", open);
      toggle.setAttribute("aria-expanded", String(open));
    });
    const like = card.querySelector(".like");
    like.setAttribute("aria-label", `More like ${hit.name}`);
    like.addEventListener("click", () => {
      state.like = hit.product_id;
      state.likeName = hit.name;
      state.text = "";
      state.image = null;
      state.page = 1;
      syncControls();
      search();
      window.scrollTo({ top: 0, behavior: "smooth" });
    });
    list.append(card);
  }
  $("prev").disabled = state.page <= 1;
  $("next").disabled = result.next_offset === null;
}

async function setImage(img, path) {
  if (!apiKey) {
    img.src = path;
    return;
  }
  try {  // an <img> cannot send the key header: fetch the picture and show it as a blob
    const response = await fetch(path, { headers: { "X-API-Key": apiKey } });
    if (!response.ok) return;
    const url = URL.createObjectURL(await response.blob());
    blobUrls.push(url);
    img.src = url;
  } catch (error) { /* the card keeps its name and attributes */ }
}

// -- facets ----------------------------------------------------------------------------------

let facetSeq = 0;

async function refreshFacets() {
  if (!info) return;
  const seq = ++facetSeq;
  const fields = info.facet_fields;
  const selected = fields.filter((f) => (state.filters[f] || []).length);
  const query = (field, filters) => {
    const p = new URLSearchParams({ limit: String(FACET_VALUES) });
    for (const f of field) p.append("field", f);
    for (const f of filters) p.append("filter", f);
    return api(`/facets?${p}`);
  };
  try {
    // A field with a selection is counted without its own condition (so its other values
    // stay visible); the rest share one request under the whole filter.
    const others = fields.filter((f) => !selected.includes(f));
    const requests = [others.length ? query(others, filterStrings()) : Promise.resolve({ facets: {} })];
    for (const field of selected) requests.push(query([field], filterStrings(field)));
    const answers = await Promise.all(requests);
    if (seq !== facetSeq) return;
    const counts = Object.assign({}, ...answers.map((a) => a.facets));
    renderFacets(fields, counts);
  } catch (error) {
    if (seq === facetSeq) $("facet-groups").textContent = `Filters unavailable: ${error.message}`;
  }
}

function renderFacets(fields, counts) {
  const groups = $("facet-groups");
  groups.replaceChildren();
  for (const field of fields) {
    const values = [...(counts[field] || [])];
    if (values.length && values.every((v) => typeof v.value === "number")) {
      values.sort((a, b) => a.value - b.value);  // years and other numbers in order
    }
    const chosen = state.filters[field] || [];
    for (const value of chosen) {  // a chosen value stays listed even when it counts 0
      if (!values.some((v) => String(v.value) === value)) values.push({ value, count: 0 });
    }
    if (!values.length) continue;
    const box = document.createElement("div");
    box.className = "facet";
    const fieldset = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = field.replace(/([a-z])([A-Z])/g, "$1 $2");
    fieldset.append(legend);
    for (const { value, count } of values) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.name = field;
      input.value = String(value);
      input.checked = chosen.includes(String(value));
      input.addEventListener("change", () => toggleFilter(field, String(value), input.checked));
      const text = document.createElement("span");
      text.textContent = String(value);
      const number = document.createElement("span");
      number.className = "count";
      number.textContent = count.toLocaleString();
      label.append(input, text, number);
      fieldset.append(label);
    }
    box.append(fieldset);
    groups.append(box);
  }
  $("clear-filters").hidden = !Object.values(state.filters).some((v) => v.length);
}

function toggleFilter(field, value, on) {
  const values = new Set(state.filters[field] || []);
  if (on) values.add(value); else values.delete(value);
  if (values.size) state.filters[field] = [...values]; else delete state.filters[field];
  state.page = 1;
  search();
}

// -- the query image and the chips -----------------------------------------------------------

function useImageFile(file) {
  if (!file) return;
  if (!/^image\/(jpeg|png|webp|gif)$/.test(file.type)) {
    showMessage(`Cannot search by ${file.name || "this file"}: use a JPEG, PNG, WebP or GIF picture.`, true);
    return;
  }
  if (info && file.size > info.limits.max_image_bytes) {
    showMessage(`The picture is too large (${(file.size / 1e6).toFixed(1)} MB); the limit is ${(info.limits.max_image_bytes / 1e6).toFixed(1)} MB.`, true);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.image = String(reader.result);
    state.like = null;
    state.page = 1;
    try { sessionStorage.setItem("clipy.image", state.image); } catch (error) { /* too large to keep */ }
    search();
  };
  reader.readAsDataURL(file);
}

function renderChips() {
  const chips = $("query-chips");
  chips.replaceChildren();
  const chip = (label, imageSrc, onRemove) => {
    const el = document.createElement("span");
    el.className = "chip";
    if (imageSrc) {
      const img = document.createElement("img");
      img.alt = "";
      if (imageSrc.startsWith("data:")) img.src = imageSrc; else setImage(img, imageSrc);
      el.append(img);
    }
    el.append(document.createTextNode(label));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove ${label}`);
    remove.addEventListener("click", onRemove);
    el.append(remove);
    chips.append(el);
  };
  if (state.image) {
    chip("Searching by your picture", state.image, () => {
      state.image = null;
      sessionStorage.removeItem("clipy.image");
      state.page = 1;
      search();
    });
  }
  if (state.like) {
    chip(`More like ${state.likeName || state.like}`, `${API}/products/${encodeURIComponent(state.like)}/image`, () => {
      state.like = null;
      state.page = 1;
      search();
    });
  }
}

function showWeights() {
  const image = Math.round(state.wImage * 100);
  $("weight-text").textContent = `${100 - image}%`;
  $("weight-image").textContent = `Image ${image}%`;
}

// -- wiring ----------------------------------------------------------------------------------

function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.text = $("q").value.trim();
    state.page = 1;
    search();
  });
  $("weight").addEventListener("input", () => {
    state.wImage = Number.parseFloat($("weight").value);
    showWeights();
  });
  $("weight").addEventListener("change", () => { state.page = 1; search(); });
  $("fusion").addEventListener("change", () => { state.fusion = $("fusion").value; state.page = 1; search(); });
  $("page-size").addEventListener("change", () => { state.size = Number($("page-size").value); state.page = 1; search(); });
  $("prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); search(); window.scrollTo(0, 0); });
  $("next").addEventListener("click", () => { state.page += 1; search(); window.scrollTo(0, 0); });
  $("clear-filters").addEventListener("click", () => { state.filters = {}; state.page = 1; search(); });
  $("file").addEventListener("change", () => { useImageFile($("file").files[0]); $("file").value = ""; });
  let depth = 0;
  document.addEventListener("dragenter", (e) => { if (e.dataTransfer.types.includes("Files")) { depth++; document.body.classList.add("dragging"); } });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) document.body.classList.remove("dragging"); });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    useImageFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); useImageFile(item.getAsFile()); }
  });
  window.addEventListener("popstate", () => { fromURL(); syncControls(); search({ push: false }); });
}

async function start() {
  wire();
  fromURL();
  syncControls();
  try {
    info = await api("/info");
  } catch (error) {
    showMessage(`The server cannot be reached: ${error.message}`, true);
    return;
  }
  if (state.like && !state.likeName) {
    api(`/products/${encodeURIComponent(state.like)}`).then((p) => { state.likeName = p.name; renderChips(); }).catch(() => {});
  }
  search({ push: false });
}

start();
