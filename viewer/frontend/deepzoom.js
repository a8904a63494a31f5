// HMIL Studio deep-zoom slide view: OpenSeadragon + a class-wise attention layer.
//
// A Streamlit components-v2 module. Streamlit calls the default export on mount and again
// whenever the data from Python changes; the OpenSeadragon viewers live in a WeakMap keyed by
// the component's element, so a new label, level, opacity or colormap only recolours the
// layer: the slide tiles stay. Everything drawn is in level-0 pixel coordinates of the slide
// (or of the coordinate canvas when there is no slide file).
//
// Data from Python (viewer/components/deepzoom_ui.py builds it):
//   osd_url, slide: {dzi, width, height, mpp, power} | null, canvas: {x0, y0, w, h},
//   layer: {strategy, grid, names: {coarse, fine}, values: {coarse: [b64], fine: [b64]},
//           tiles: {coarse: [dzi url], fine: [dzi url]} (server strategy)},
//   show: {level, label, mode, alpha, lut (b64 256x3), smooth, outline: [[x, y, ...]]},
//   patch: index | null, goto: {x, y, size, nonce} | null, height, key.
// Triggers to Python: label {level, label}, alpha (number), patch (index).

const VIEWS = new WeakMap();
const LIVE = new Set(); // open OpenSeadragon viewers, for PERF.busy()
const PERF = (window.__hmilDZ = window.__hmilDZ || { events: [] });
// tiles being fetched by any view right now (the benchmark waits for 0)
PERF.busy = () => Array.from(LIVE).reduce((n, v) => n + v.imageLoader.jobsInProgress, 0);

// a label chosen on the view reaches the page after this long without another click (ms)
const LABEL_SETTLE_MS = 350;

function mark(name, extra) {
  PERF.events.push({ name, t: performance.now(), ...(extra || {}) });
  if (PERF.events.length > 2000) PERF.events.splice(0, 1000);
}

function loadOSD(url) {
  if (window.OpenSeadragon) return Promise.resolve(window.OpenSeadragon);
  if (!window.__hmilOsdLoading) {
    window.__hmilOsdLoading = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = url;
      s.async = true;
      s.onload = () => resolve(window.OpenSeadragon);
      s.onerror = () => reject(new Error("cannot load " + url));
      document.head.appendChild(s);
    });
  }
  return window.__hmilOsdLoading;
}

function bytes(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

// ------------------------------------------------------------------ patch layer (canvas)

class PatchLayer {
  // One image of cols x rows pixels, one pixel per grid cell, recoloured per label.
  constructor(grid) {
    this.grid = grid;
    const cells = new Uint32Array(bytes(grid.cells).buffer);
    this.cells = cells; // (N, 2) col, row
    this.canvas = document.createElement("canvas");
    this.canvas.width = grid.cols;
    this.canvas.height = grid.rows;
    this.ctx = this.canvas.getContext("2d");
    this.image = this.ctx.createImageData(grid.cols, grid.rows);
    this.patchAt = new Int32Array(grid.cols * grid.rows).fill(-1);
    const span = grid.span;
    for (let i = 0; i < grid.n; i++) {
      const c = cells[2 * i], r = cells[2 * i + 1];
      for (let dy = 0; dy < span; dy++)
        for (let dx = 0; dx < span; dx++) this.patchAt[(r + dy) * grid.cols + c + dx] = i;
    }
    this.key = null;
  }

  colour(values, lut, key) {
    if (key === this.key) return;
    const px = this.image.data, cols = this.grid.cols, span = this.grid.span;
    px.fill(0);
    for (let i = 0; i < this.grid.n; i++) {
      const v = values[i] * 3, c = this.cells[2 * i], r = this.cells[2 * i + 1];
      for (let dy = 0; dy < span; dy++) {
        let o = ((r + dy) * cols + c) * 4;
        for (let dx = 0; dx < span; dx++, o += 4) {
          px[o] = lut[v]; px[o + 1] = lut[v + 1]; px[o + 2] = lut[v + 2]; px[o + 3] = 255;
        }
      }
    }
    this.ctx.putImageData(this.image, 0, 0);
    this.key = key;
  }

  patchIndex(x, y) {
    const g = this.grid;
    const c = Math.floor((x - g.origin[0]) / g.step), r = Math.floor((y - g.origin[1]) / g.step);
    if (c < 0 || r < 0 || c >= g.cols || r >= g.rows) return -1;
    return this.patchAt[r * g.cols + c];
  }
}

// ------------------------------------------------------------------ one viewer

class SlideView {
  constructor(host, OSD, data, label, onPatch, primary) {
    this.OSD = OSD;
    this.label = label; // {level, name}
    this.frame = el("div", "hmil-dz-frame", host);
    this.frame.tabIndex = -1;
    this.osdEl = el("div", "hmil-dz-osd", this.frame);
    this.title = el("div", "hmil-dz-title", this.frame);
    this.scale = el("div", "hmil-dz-scale", this.frame);
    this.scaleBar = el("div", "hmil-dz-scale-bar", this.scale);
    this.scaleText = el("div", "hmil-dz-scale-text", this.scale);
    this.tip = el("div", "hmil-dz-tip", this.frame);
    this.canvasInfo = data.canvas;
    this.slide = data.slide;
    const source = data.slide ? data.slide.dzi : blankImage(data.canvas);
    this.viewer = OSD({
      element: this.osdEl,
      tileSources: source,
      drawer: "canvas",
      showNavigationControl: false,
      showNavigator: primary,
      navigatorPosition: "TOP_RIGHT",
      navigatorSizeRatio: 0.2,
      navigatorAutoFade: false,
      maxZoomPixelRatio: 2,
      minZoomImageRatio: 0.5,
      visibilityRatio: 0.3,
      zoomPerScroll: 1.5,
      animationTime: 0.25,
      springStiffness: 9,
      imageLoaderLimit: 8,
      maxTilesPerFrame: 8, // the default 1 loads one tile per frame: ~20 ms apart here
      timeout: 60000,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, scrollToZoom: true },
      gestureSettingsTouch: { pinchToZoom: true, dblClickToZoom: true, flickEnabled: true },
    });
    LIVE.add(this.viewer);
    this.viewer.addHandler("animation-finish", () => mark("settled"));
    this.overlay = el("canvas", "hmil-dz-layer");
    this.viewer.canvas.appendChild(this.overlay);
    this.layerTiles = null;
    this.layerTilesUrl = null;
    this.viewer.addHandler("update-viewport", () => this.draw());
    this.viewer.addHandler("resize", () => this.draw());
    this.viewer.addHandler("open", () => {
      mark("open");
      this.draw();
    });
    this.viewer.addHandler("tile-loaded", () => mark("tile"));
    this.viewer.world.addHandler("add-item", (e) => {
      e.item.addHandler("fully-loaded-change", (f) => {
        if (!f.fullyLoaded) return;
        if (e.item === this.layerTiles) mark("layer-loaded", { url: this.layerTilesUrl });
        else mark("slide-loaded");
      });
    });
    this.viewer.addHandler("canvas-click", (e) => {
      if (!e.quick) return;
      const p = this.level0(e.position);
      const i = this.layer ? this.layer.patchIndex(p.x, p.y) : -1;
      mark("patch-click", { index: i });
      if (i >= 0) onPatch(i);
    });
    new OSD.MouseTracker({
      element: this.viewer.canvas,
      moveHandler: (e) => this.hover(e.position),
      leaveHandler: () => (this.tip.style.display = "none"),
    });
  }

  // level-0 pixels <-> OpenSeadragon viewport coordinates (the base image is 1 unit wide)
  level0(pixel) {
    const v = this.viewer.viewport.pointFromPixel(pixel, true);
    const c = this.canvasInfo;
    return { x: c.x0 + v.x * c.w, y: c.y0 + v.y * c.w };
  }

  pixel(x, y) {
    const c = this.canvasInfo;
    const p = new this.OSD.Point((x - c.x0) / c.w, (y - c.y0) / c.w);
    return this.viewer.viewport.pixelFromPoint(p, true);
  }

  level0PerScreenPx() {
    const a = this.level0(new this.OSD.Point(0, 0));
    const b = this.level0(new this.OSD.Point(100, 0));
    return (b.x - a.x) / 100;
  }

  set(state) {
    Object.assign(this, state);
    this.draw();
  }

  draw() {
    const ctx = this.overlay.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    const w = this.viewer.canvas.clientWidth, h = this.viewer.canvas.clientHeight;
    if (this.overlay.width !== Math.round(w * dpr) || this.overlay.height !== Math.round(h * dpr)) {
      this.overlay.width = Math.round(w * dpr);
      this.overlay.height = Math.round(h * dpr);
      this.overlay.style.width = w + "px";
      this.overlay.style.height = h + "px";
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    this.drawScale();
    if (!this.viewer.world.getItemCount()) return;
    if (this.layer && this.visible && this.strategy === "canvas") {
      const g = this.layer.grid;
      const a = this.pixel(g.origin[0], g.origin[1]);
      const b = this.pixel(g.origin[0] + g.cols * g.step, g.origin[1] + g.rows * g.step);
      ctx.globalAlpha = this.alpha;
      ctx.imageSmoothingEnabled = this.smooth > 0;
      ctx.drawImage(this.layer.canvas, a.x, a.y, b.x - a.x, b.y - a.y);
      ctx.globalAlpha = 1;
    }
    if (this.outline && this.outline.length) {
      ctx.strokeStyle = "rgb(0,170,60)";
      ctx.lineWidth = 2;
      ctx.beginPath();
      for (const line of this.outline) {
        for (let i = 0; i < line.length; i += 2) {
          const p = this.pixel(line[i], line[i + 1]);
          if (i === 0) ctx.moveTo(p.x, p.y);
          else ctx.lineTo(p.x, p.y);
        }
      }
      ctx.stroke();
    }
    if (this.patchBox) {
      const [x, y, s] = this.patchBox;
      const a = this.pixel(x, y), b = this.pixel(x + s, y + s);
      ctx.strokeStyle = "rgb(20,90,255)";
      ctx.lineWidth = 3;
      ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
    }
    mark("draw", { label: this.label.name });
  }

  drawScale() {
    const ds = this.level0PerScreenPx();
    if (!isFinite(ds) || ds <= 0) return;
    const mpp = this.slide && this.slide.mpp;
    let text, px;
    if (mpp) {
      const target = 120 * ds * mpp; // µm under 120 screen px
      const exp = Math.pow(10, Math.floor(Math.log10(target)));
      const nice = [5, 2, 1].map((m) => m * exp).find((v) => v <= target) || exp;
      px = nice / (ds * mpp);
      text = nice >= 1000 ? `${nice / 1000} mm` : `${+nice.toPrecision(3)} µm`;
      const power = this.slide.power;
      text += power ? ` · ${+(power / ds).toPrecision(3)}×` : ` · ${+(mpp * ds).toPrecision(3)} µm/px`;
    } else {
      const target = 120 * ds;
      const exp = Math.pow(10, Math.floor(Math.log10(target)));
      const nice = [5, 2, 1].map((m) => m * exp).find((v) => v <= target) || exp;
      px = nice / ds;
      text = `${nice} px (level 0) · MPP unknown: no µm scale`;
    }
    this.scaleBar.style.width = Math.round(px) + "px";
    this.scaleText.textContent = text;
  }

  hover(position) {
    if (!this.layer) return;
    const p = this.level0(position);
    const i = this.layer.patchIndex(p.x, p.y);
    if (i < 0) {
      this.tip.style.display = "none";
      return;
    }
    const cells = this.layer.cells, g = this.layer.grid;
    const x = Math.round(g.origin[0] + cells[2 * i] * g.step);
    const y = Math.round(g.origin[1] + cells[2 * i + 1] * g.step);
    const rows = [];
    for (const level of ["coarse", "fine"]) {
      const names = this.names[level];
      const vals = this.values[level];
      const parts = names.map((n, k) => {
        const v = Math.round((vals[k][i] / 255) * 100);
        const cur = level === this.label.level && n === this.label.name;
        return cur ? `<b>${escapeHtml(n)} ${v}</b>` : `${escapeHtml(n)} ${v}`;
      });
      rows.push(`<div><i>${level}</i> ${parts.join(" · ")}</div>`);
    }
    this.tip.innerHTML =
      `<div><b>patch ${i}</b> at (${x}, ${y}) · ${this.normalize} (0–100) — click for details</div>` +
      rows.join("");
    this.tip.style.display = "block";
    const fw = this.frame.clientWidth;
    this.tip.style.left = Math.min(position.x + 14, fw - 330) + "px";
    this.tip.style.top = position.y + 14 + "px";
  }

  setTilesLayer(url, alpha) {
    // "layer-loaded" = the overlay as asked for is on screen. OpenSeadragon raises
    // fully-loaded-change only for an item it draws: at opacity 0 it never loads the tiles
    // (TiledImage.getDrawArea is empty), so that event would never come; nothing to load
    // (no layer, or an invisible one) is marked at once instead.
    if (this.layerTilesUrl === url) {
      if (this.layerTiles) this.layerTiles.setOpacity(alpha);
      return;
    }
    if (this.layerTiles) this.viewer.world.removeItem(this.layerTiles);
    this.layerTiles = null;
    this.layerTilesUrl = url;
    if (!url || alpha <= 0) mark("layer-loaded", { url, empty: true });
    if (!url) return;
    mark("layer-request", { url });
    this.viewer.addTiledImage({
      tileSource: url,
      opacity: alpha,
      x: 0,
      width: 1,
      success: (e) => {
        if (this.layerTilesUrl === url) this.layerTiles = e.item;
        else this.viewer.world.removeItem(e.item);
      },
    });
  }

  destroy() {
    LIVE.delete(this.viewer);
    this.viewer.destroy();
    this.frame.remove();
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function blankImage(canvas) {
  // the coordinate canvas: a white image with the coords' extent's aspect ratio
  const c = document.createElement("canvas");
  c.width = 1024;
  c.height = Math.max(1, Math.round((1024 * canvas.h) / canvas.w));
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, c.width, c.height);
  return { type: "image", url: c.toDataURL("image/png") };
}

// ------------------------------------------------------------------ the component

class DeepZoom {
  constructor(root, OSD) {
    this.root = root;
    this.OSD = OSD;
    this.box = el("div", "hmil-dz", root);
    this.bar = el("div", "hmil-dz-bar", this.box);
    this.levelBox = el("span", "hmil-dz-levels", this.bar);
    this.chips = el("span", "hmil-dz-chips", this.bar);
    const op = el("label", "hmil-dz-opacity", this.bar, "opacity ");
    this.opacity = el("input", "", op);
    this.opacity.type = "range";
    this.opacity.min = "0";
    this.opacity.max = "1";
    this.opacity.step = "0.05";
    const vis = el("label", "hmil-dz-visible", this.bar);
    this.visibleBox = el("input", "", vis);
    this.visibleBox.type = "checkbox";
    this.visibleBox.checked = true;
    vis.appendChild(document.createTextNode(" layer"));
    this.fit = el("button", "hmil-dz-fit", this.bar, "fit (0)");
    this.grid = el("div", "hmil-dz-grid", this.box);
    this.help = el(
      "div",
      "hmil-dz-help",
      this.box,
      "drag: pan · wheel / pinch: zoom at the cursor · double-click: zoom in (shift: out) · " +
        "arrows, + / −, 0: keyboard · hover a patch: its attention under every label · click: details"
    );
    this.views = [];
    this.slideKey = null;
    this.layer = null;
    this.triggers = null;
    this.syncing = false;
    this.pending = null; // {level, label} chosen on the view, not yet echoed by the page
    this.pendingSent = 0; // when the page was told (performance.now)
    this.labelTimer = null;
    this.opacity.addEventListener("input", () => {
      this.alpha = Number(this.opacity.value);
      this.apply();
    });
    this.opacity.addEventListener("change", () => this.triggers.setTriggerValue("alpha", this.alpha));
    this.visibleBox.addEventListener("change", () => this.apply());
    this.fit.addEventListener("click", () => this.views.forEach((v) => v.viewer.viewport.goHome()));
  }

  update(data, triggers) {
    this.triggers = triggers;
    this.data = data;
    const slideKey = JSON.stringify([data.slide && data.slide.dzi, data.canvas, data.show.mode,
      data.show.mode === "all" ? data.show.level : "", data.height]);
    if (slideKey !== this.slideKey) this.build(data);
    this.slideKey = slideKey;
    const layerKey = data.layer ? data.layer.values_key : null;
    if (layerKey !== this.layerKey) {
      this.layerKey = layerKey;
      this.names = data.layer ? data.layer.names : { coarse: [], fine: [] };
      this.values = {};
      if (data.layer) {
        for (const level of ["coarse", "fine"])
          this.values[level] = data.layer.values[level].map(bytes);
        if (!this.layer || this.layer.grid.cells !== data.layer.grid.cells)
          this.layer = new PatchLayer(data.layer.grid);
        this.layer.key = null;
      } else this.layer = null;
    }
    const show = data.show;
    this.lut = bytes(show.lut);
    this.lutKey = show.lut;
    this.alpha = show.alpha;
    this.opacity.value = String(show.alpha);
    const echoed = this.pending && show.level === this.pending.level && show.label === this.pending.label;
    const lost = this.pending && !this.labelTimer && performance.now() - this.pendingSent > 3000;
    if (echoed || lost) this.pending = null; // the page has caught up (or never will)
    const serverMoved = show.label !== this.serverLabel || show.level !== this.serverLevel;
    this.serverLabel = show.label;
    this.serverLevel = show.level;
    // a page run started before the last click on the view still carries the older label:
    // keep the view's own choice until the page echoes it (the Label box wins otherwise)
    if (!this.current || (serverMoved && !this.pending))
      this.current = { level: show.level, name: show.label };
    this.chipsFor(this.current.level);
    this.apply();
    if (data.goto && data.goto.nonce !== this.gotoNonce) {
      this.gotoNonce = data.goto.nonce;
      this.goTo(data.goto);
    }
  }

  build(data) {
    this.views.forEach((v) => v.destroy());
    this.views = [];
    this.grid.innerHTML = "";
    const all = data.show.mode === "all" && data.layer;
    const labels = all
      ? data.layer.names[data.show.level].map((n) => ({ level: data.show.level, name: n }))
      : [{ level: data.show.level, name: data.show.label }];
    this.grid.className = all ? "hmil-dz-grid hmil-dz-multi" : "hmil-dz-grid";
    this.grid.style.setProperty("--hmil-dz-h", (all ? data.height_small : data.height) + "px");
    labels.forEach((label, k) => {
      const view = new SlideView(this.grid, this.OSD, data, label, (i) => this.pick(i), k === 0);
      this.views.push(view);
      view.viewer.addHandler("viewport-change", () => this.sync(view));
    });
    this.bar.style.display = all ? "none" : "";
    if (!all) this.viewerKeyboard(this.views[0]);
    mark("build", { views: this.views.length });
  }

  viewerKeyboard(view) {
    // "0" = fit: OpenSeadragon's own keys pan (arrows, wasd) and zoom (+ / -)
    view.viewer.addHandler("canvas-key", (e) => {
      if (e.originalEvent.key === "0") {
        view.viewer.viewport.goHome();
        e.preventDefaultAction = true;
      }
    });
  }

  sync(source) {
    if (this.syncing || this.views.length < 2) return;
    this.syncing = true;
    const vp = source.viewer.viewport;
    for (const v of this.views) {
      if (v === source) continue;
      v.viewer.viewport.zoomTo(vp.getZoom(false), null, true);
      v.viewer.viewport.panTo(vp.getCenter(false), true);
    }
    this.syncing = false;
  }

  chipsFor(level) {
    const layer = this.data.layer;
    this.levelBox.innerHTML = "";
    this.chips.innerHTML = "";
    if (!layer) return;
    for (const lv of ["coarse", "fine"]) {
      const b = el("button", "hmil-dz-level" + (lv === level ? " on" : ""), this.levelBox, lv);
      b.addEventListener("click", () => this.choose(lv, this.defaultLabel(lv)));
    }
    for (const name of layer.names[level]) {
      const on = name === this.current.name && level === this.current.level;
      const b = el("button", "hmil-dz-chip" + (on ? " on" : ""), this.chips, name);
      b.dataset.label = name;
      b.addEventListener("click", () => this.choose(level, name));
    }
  }

  defaultLabel(level) {
    const pred = this.data.layer.predicted[level];
    return pred || this.data.layer.names[level][0];
  }

  choose(level, name) {
    // recolour now; tell the page once the clicks settle, so that browsing labels chip after
    // chip is not interrupted by the page's rerun (and its redraw) after every click
    mark("label-click", { level, name });
    this.current = { level, name };
    this.chipsFor(level);
    this.apply();
    this.pending = { level, label: name };
    clearTimeout(this.labelTimer);
    PERF.labelPending = true; // browser.settle waits for the page to be told
    this.labelTimer = setTimeout(() => {
      this.labelTimer = null;
      PERF.labelPending = false;
      this.pendingSent = performance.now();
      this.triggers.setTriggerValue("label", this.pending);
    }, LABEL_SETTLE_MS);
  }

  apply() {
    const show = this.data.show;
    const visible = this.visibleBox.checked;
    for (const v of this.views) {
      if (this.views.length === 1) v.label = this.current;
      const label = v.label;
      v.title.textContent = this.views.length > 1 ? `${label.level} · ${label.name}` : "";
      let state = {
        strategy: this.data.layer ? this.data.layer.strategy : "canvas",
        names: this.names,
        values: this.values,
        normalize: show.normalize,
        visible,
        alpha: this.alpha,
        smooth: show.smooth,
        outline: show.outline,
        patchBox: this.data.patch_box,
        layer: null,
      };
      if (this.layer) {
        const k = this.names[label.level].indexOf(label.name);
        if (k >= 0 && state.strategy === "canvas" && this.views.length === 1) {
          this.layer.colour(this.values[label.level][k], this.lut, `${label.level}/${k}/${this.lutKey}`);
          state.layer = this.layer;
        } else if (k >= 0 && state.strategy === "canvas") {
          // small multiples: one coloured copy per view
          if (!v.ownLayer) v.ownLayer = new PatchLayer(this.data.layer.grid);
          v.ownLayer.colour(this.values[label.level][k], this.lut, `${label.level}/${k}/${this.lutKey}`);
          state.layer = v.ownLayer;
        } else if (k >= 0) {
          state.layer = this.layer; // hover lookups
          v.setTilesLayer(visible ? this.data.layer.tiles[label.level][k] : null, this.alpha);
        }
      }
      v.set(state);
    }
  }

  pick(index) {
    this.triggers.setTriggerValue("patch", index);
  }

  goTo(g) {
    const v = this.views[0];
    if (!v) return;
    const c = this.data.canvas;
    const margin = g.size * 1.5;
    const rect = new this.OSD.Rect(
      (g.x - margin - c.x0) / c.w, (g.y - margin - c.y0) / c.w, (g.size + 2 * margin) / c.w,
      (g.size + 2 * margin) / c.w
    );
    const go = () => v.viewer.viewport.fitBounds(rect, false);
    if (v.viewer.world.getItemCount()) go();
    else v.viewer.addOnceHandler("open", go);
  }

  destroy() {
    clearTimeout(this.labelTimer);
    this.views.forEach((v) => v.destroy());
    this.box.remove();
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue, setStateValue } = component;
  const root = parentElement;
  let entry = VIEWS.get(root);
  if (!entry) {
    entry = { gen: 0, view: null, pending: null };
    VIEWS.set(root, entry);
  }
  const gen = ++entry.gen;
  mark("mount");
  loadOSD(data.osd_url).then((OSD) => {
    if (gen !== entry.gen) return; // a newer call took over
    if (!entry.view) entry.view = new DeepZoom(root, OSD);
    entry.view.update(data, { setTriggerValue, setStateValue });
  }).catch((err) => {
    el("div", "hmil-dz-error", root,
      `${err.message}: the deep-zoom view needs the viewer's own server, which serves ` +
      "OpenSeadragon and the tiles — start it with `hmil view` (not `streamlit run viewer/app.py`)");
  });
  return () => {
    if (gen !== entry.gen) return; // only the latest call owns the view
    if (entry.view) entry.view.destroy();
    VIEWS.delete(root);
  };
}
