// HMIL Studio deep-zoom slide view: OpenSeadragon + a class-wise attention layer with a legend.
//
// A Streamlit components-v2 module. Streamlit calls the default export on mount and again
// whenever the data from Python changes; the OpenSeadragon viewers live in a WeakMap keyed by
// the component's element, so a new label, level, opacity or colormap only recolours the
// layer: the slide tiles stay. Everything drawn is in level-0 pixel coordinates of the slide
// (or of the coordinate canvas when there is no slide file).
//
// Data from Python: the typedefs below (viewer/tiles/deepzoom_data.py builds them; TypeScript
// checks this file against them, `npm run typecheck`). Triggers to Python: label {level, label},
// alpha (number), mode ("single"|"all"), patch (index), nav (-1 | 1 | "unreviewed"), region {nonce, shape,
// points} (a rectangle or polygon drawn on the view, level-0 px; the page saves it and sends it
// back in data.regions). Regions and the lesion outline are drawn by one routine (drawShapes)
// on the view's own canvas, above the attention layer. Drawing uses the vendored Annotorious
// (loaded from the viewer's port like OpenSeadragon, only when a drawing tool is chosen); the
// "PNG" button composes what the view shows (tiles, layer, shapes, legend, scale bar, caption)
// into one image in the browser.
// The view writes its own moves into the page's address (level, label, opacity, mode and
// the viewport x, y, zoom) with history.replaceState, so a reload or a copied link shows the
// same picture; Python writes the rest (run, slide, fold, style).

// @ts-check

/**
 * @typedef {"coarse" | "fine"} Level
 * @typedef {{coarse: string[], fine: string[]}} Names
 * @typedef {{dzi: string, width: number, height: number, mpp: number | null,
 *   power: number | null}} SlideInfo the slide's Deep Zoom source; level-0 size and MPP
 * @typedef {{x0: number, y0: number, w: number, h: number}} CanvasInfo what is drawn on, in
 *   level-0 px (the slide, or the coords' extent when there is no slide file)
 * @typedef {{origin: number[], step: number, cols: number, rows: number, span: number,
 *   exact: boolean, cells: string, n: number}} Grid the patches on a grid of cells: cells is
 *   base64 of (n, 2) little-endian uint32 (col, row), each patch covering span x span cells
 * @typedef {{title: string, ticks: Array<[number, string]>, uncoloured: string}} LegendInfo
 * @typedef {{legend: LegendInfo, texts: string[]}} Scale one colour scale: texts[code] is a
 *   patch's value in the legend's units
 * @typedef {{codes: string[], scales: Scale[], scale_of: number[]}} LevelValues per label k:
 *   codes[k] base64 of one uint8 colour code per patch (0: uncoloured), on scales[scale_of[k]]
 * @typedef {{strategy: "canvas" | "tiles", grid: Grid, names: Names,
 *   predicted: {coarse: string, fine: string}, levels: {coarse: LevelValues, fine: LevelValues},
 *   values_key: string, patch_size: number, n: number,
 *   tiles?: {coarse: string[], fine: string[]}}} Layer the attention layer (tiles: the
 *   overlay's DZI URL per label, server-rendered strategy)
 * @typedef {{level: Level, label: string, mode: string, alpha: number, lut: string,
 *   smooth: number, outline: number[][]}} Show what to draw (lut: base64 256 x 3 code colours;
 *   outline: polylines as flat [x0, y0, x1, y1, ...] in level-0 px)
 * @typedef {{x: number, y: number, size: number, nonce: number}} GoTo a patch to fly to
 * @typedef {{x: number, y: number, zoom: number, nonce?: number}} Viewport a link's view:
 *   level-0 centre and zoom (screen px per level-0 px)
 * @typedef {{has_prev: boolean, has_next: boolean, unreviewed?: boolean}} Nav (unreviewed:
 *   the slide can be reviewed, so key u asks the page for the next unreviewed slide)
 * @typedef {{name: string, classification: string, colour: number[], rings: number[][]}}
 *   RegionInfo a saved region: exterior and hole rings, each closed, flat [x0, y0, x1, y1, ...]
 *   in level-0 px
 * @typedef {{enabled: boolean, classification: string, colour: number[]}} DrawInfo whether
 *   regions can be drawn (and saved), and the class and colour a new drawing gets
 * @typedef {{slide_id: string, label: string, truth: string, model: string}} Caption what the
 *   PNG export writes on the image
 * @typedef {{osd_url: string, view_id: string, slide: SlideInfo | null, canvas: CanvasInfo,
 *   layer: Layer | null, show: Show, truth: {coarse: string, fine: string} | null,
 *   nav: Nav | null, note: string, patch_box: number[] | null, goto: GoTo | null,
 *   viewport: Viewport | null, min_height: number, regions?: RegionInfo[], draw?: DrawInfo,
 *   caption?: Caption}} DeepZoomData the component's data
 * @typedef {{lines: number[][], closed: boolean, stroke: string, fill: string | null,
 *   width: number, dash: number[] | null, label: string, casing: string | null,
 *   ink: string}} Shape polylines or rings (flat level-0 px) drawn on a view: closed rings
 *   are filled even-odd (holes stay open); casing: a wider dark line under the stroke (a
 *   light class colour stays visible on pink tissue); the label on a tag of the stroke's
 *   colour in ink
 * @typedef {{x: number, y: number, s: number}} ScreenMap level-0 (x0, y0) of the canvas at
 *   screen (x, y), s screen px per level-0 px (the views never rotate)
 * @typedef {{setTriggerValue: (name: string, value: unknown) => void}} Triggers
 * @typedef {{level: Level, name: string}} Label
 * @typedef {{onPatch: (i: number) => void, onOpen: (v: SlideView) => void,
 *   onSettled: (v: SlideView) => void}} ViewHooks
 * @typedef {{strategy: string, names: Names, levels: {coarse: LevelValues, fine: LevelValues}
 *   | null, codes: Partial<Record<Level, Uint8Array[]>>, visible: boolean, alpha: number,
 *   smooth: number, outline: number[][], patchBox: number[] | null,
 *   layer: PatchLayer | null, regions: RegionInfo[], drafts: Shape[]}} ViewState what one
 *   view draws (drafts: drawn shapes sent to the page, not yet back as regions)
 * @typedef {any} OSDModule OpenSeadragon, loaded at run time (no types shipped with it)
 */

/**
 * @typedef {any} AnnoModule Annotorious for OpenSeadragon (global AnnotoriousOSD), loaded at
 *   run time
 * @type {Window & {OpenSeadragon?: OSDModule, __hmilOsdLoading?: Promise<OSDModule>,
 *   AnnotoriousOSD?: AnnoModule, __hmilAnnoLoading?: Promise<AnnoModule>}}
 */
const WIN = window;

/** @type {WeakMap<HTMLElement, {gen: number, view: DeepZoom | null}>} */
const VIEWS = new WeakMap();

// a label chosen on the view reaches the page after this long without another click (ms)
const LABEL_SETTLE_MS = 350;
// a click selects a patch only when no second click follows within this (a double-click zooms)
const CLICK_DELAY_MS = 300;
// the address is rewritten at most this often while the view moves (ms)
const URL_EVERY_MS = 250;
// a drawn shape stays drawn (dashed) while the page saves it, at most this long (ms): a
// refused drawing (the page says why) leaves the view
const DRAFT_MS = 10000;
// the lesion outline's colour (the ground truth mask)
const OUTLINE_COLOUR = "rgb(0,170,60)";
// the vendored Annotorious, next to the vendored OpenSeadragon on the viewer's port
const ANNO_JS = "../annotorious/annotorious-openseadragon.js";
const ANNO_CSS = "../annotorious/annotorious-openseadragon.css";
/** @type {Level[]} */
const LEVELS = ["coarse", "fine"];
const HELP =
  "drag: pan · wheel / pinch: zoom · double-click: zoom in (shift: out) · arrows, + / −, 0: " +
  "keyboard · hover: attention of the patch under every label · click: details · " +
  "t: true ↔ predicted label · n / p: next / previous slide · f: full screen · " +
  "PNG: download the view";
const HELP_DRAW = " · ▭ / ⬠: draw a region (Esc cancels)";
const HELP_REVIEW = " · u: next unreviewed slide";
// the drawing tools: Annotorious's tool name, the button, its tooltip
const TOOLS = [
  ["rectangle", "▭ Rectangle", "draw a rectangular region: drag over the slide (Esc cancels)"],
  ["polygon", "⬠ Polygon", "draw a polygon region: click its corners, double-click or click " +
    "the first corner to close it (Esc cancels)"],
];
/** @type {Record<string, string>} how each tool draws (Annotorious's drawing modes) */
const DRAWING_MODE = { rectangle: "drag", polygon: "click" };

/** @param {string} url @returns {Promise<OSDModule>} */
function loadOSD(url) {
  if (WIN.OpenSeadragon) return Promise.resolve(WIN.OpenSeadragon);
  if (!WIN.__hmilOsdLoading) {
    WIN.__hmilOsdLoading = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = url;
      s.async = true;
      s.onload = () => resolve(WIN.OpenSeadragon);
      s.onerror = () => reject(new Error("cannot load " + url));
      document.head.appendChild(s);
    });
  }
  return WIN.__hmilOsdLoading;
}

/** @param {string} osdUrl @returns {Promise<AnnoModule>} */
function loadAnnotorious(osdUrl) {
  // after OpenSeadragon (the UMD build reads window.OpenSeadragon); its CSS once, as a link
  if (WIN.AnnotoriousOSD) return Promise.resolve(WIN.AnnotoriousOSD);
  if (!WIN.__hmilAnnoLoading) {
    const base = new URL(osdUrl, window.location.href);
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = new URL(ANNO_CSS, base).href;
    document.head.appendChild(css);
    WIN.__hmilAnnoLoading = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = new URL(ANNO_JS, base).href;
      s.async = true;
      s.onload = () => resolve(WIN.AnnotoriousOSD);
      s.onerror = () => {
        WIN.__hmilAnnoLoading = undefined; // a later click tries again
        reject(new Error("cannot load " + s.src));
      };
      document.head.appendChild(s);
    });
  }
  return WIN.__hmilAnnoLoading;
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

// bidirectional controls would reorder what follows a class or slide name: shown without them
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
function shown(name) {
  return String(name).replace(BIDI, "");
}

function typing(event) {
  // keys typed into a field (search box, select) are not shortcuts
  const t = event.target;
  if (!t || !t.tagName) return false;
  return /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName) || t.isContentEditable;
}

// ------------------------------------------------------------------ the page's address

function writeAddress(params) {
  // merge {name: value | null} into the address without a new history entry
  const url = new URL(window.location.href);
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "") url.searchParams.delete(k);
    else url.searchParams.set(k, String(v));
  }
  if (url.href !== window.location.href) window.history.replaceState(window.history.state, "", url);
}

// ------------------------------------------------------------------ patch layer (canvas)

class PatchLayer {
  // One image of cols x rows pixels, one pixel per grid cell, recoloured per label.
  /** @param {Grid} grid */
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

  /** @param {Uint8Array} codes @param {Uint8Array} lut @param {string} key */
  colour(codes, lut, key) {
    // code 0: not coloured (transparent); code c: colour c of the table
    if (key === this.key) return;
    const px = this.image.data, cols = this.grid.cols, span = this.grid.span;
    px.fill(0);
    for (let i = 0; i < this.grid.n; i++) {
      const code = codes[i];
      if (!code) continue;
      const v = code * 3, c = this.cells[2 * i], r = this.cells[2 * i + 1];
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

  /** @param {number} x @param {number} y level-0 px @returns {number} the patch, or -1 */
  patchIndex(x, y) {
    const g = this.grid;
    const c = Math.floor((x - g.origin[0]) / g.step), r = Math.floor((y - g.origin[1]) / g.step);
    if (c < 0 || r < 0 || c >= g.cols || r >= g.rows) return -1;
    return this.patchAt[r * g.cols + c];
  }
}

// ------------------------------------------------------------------ legend

class Legend {
  // The colour bar of the current label's scale: title, bar, tick values, uncoloured rule.
  /** @param {HTMLElement} parent */
  constructor(parent) {
    this.box = el("div", "hmil-dz-legend", parent);
    this.title = el("div", "hmil-dz-legend-title", this.box);
    this.bar = el("canvas", "hmil-dz-legend-bar", this.box);
    this.bar.width = 255;
    this.bar.height = 1;
    this.ticks = el("div", "hmil-dz-legend-ticks", this.box);
    this.note = el("div", "hmil-dz-legend-note", this.box);
    this.key = null;
    /** @type {Scale | null} */ this.scale = null;
  }

  /**
   * @param {Scale | null} scale none: the legend is hidden
   * @param {Uint8Array} [lut] @param {string} [lutKey] @param {string} [prefix]
   */
  set(scale, lut, lutKey, prefix) {
    const key = JSON.stringify([scale && scale.legend, lutKey, prefix]);
    if (key === this.key) return;
    this.key = key;
    this.scale = scale;
    this.box.style.display = scale ? "" : "none";
    if (!scale) return;
    const legend = scale.legend;
    this.title.textContent = (prefix ? shown(prefix) + " · " : "") + legend.title;
    const ctx = this.bar.getContext("2d");
    const img = ctx.createImageData(255, 1);
    for (let c = 1; c < 256; c++) {
      const o = (c - 1) * 4;
      img.data[o] = lut[3 * c]; img.data[o + 1] = lut[3 * c + 1]; img.data[o + 2] = lut[3 * c + 2];
      img.data[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    this.ticks.textContent = "";
    for (const [pos, text] of legend.ticks) {
      const t = el("span", "hmil-dz-legend-tick", this.ticks, text);
      t.style.left = (100 * pos).toFixed(2) + "%";
      if (pos <= 0.02) t.classList.add("first");
      if (pos >= 0.98) t.classList.add("last");
    }
    this.note.textContent = legend.uncoloured || "";
  }

  /**
   * Draw the legend as it is on screen (same box, colours, ticks, texts) onto an export.
   * @param {CanvasRenderingContext2D} ctx
   * @param {{left: number, top: number}} origin the exported area's top left on screen
   */
  paint(ctx, origin) {
    if (!this.scale || this.box.style.display === "none") return;
    const box = this.box.getBoundingClientRect();
    if (!box.width || !box.height) return;
    const at = (e) => {
      const r = e.getBoundingClientRect();
      return { x: r.left - origin.left, y: r.top - origin.top, w: r.width, h: r.height };
    };
    const b = at(this.box);
    ctx.save();
    // the shared legend has no box of its own on screen (it sits on the page): one here
    const bg = getComputedStyle(this.box).backgroundColor;
    const bare = !bg || bg === "rgba(0, 0, 0, 0)" || bg === "transparent";
    const pad = bare ? 6 : 0;
    ctx.fillStyle = bare ? "rgba(255,255,255,0.92)" : bg;
    roundRect(ctx, b.x - pad, b.y - pad, b.w + 2 * pad, b.h + 2 * pad, 3);
    ctx.fill();
    for (const e of [this.title, this.note, ...Array.from(this.ticks.children)])
      paintText(ctx, /** @type {HTMLElement} */ (e), origin);
    const bar = at(this.bar);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.bar, bar.x, bar.y, bar.w, bar.h);
    ctx.restore();
  }
}

// ------------------------------------------------------------------ shapes (outline, regions)

/**
 * Draw shapes on a view's canvas (the lesion outline and the regions alike): one path per
 * shape, closed rings filled even-odd (a hole is a ring inside the exterior), the casing and
 * the stroke over it, then the label on a tag above the shape's topmost point.
 * @param {CanvasRenderingContext2D} ctx @param {Shape[]} shapes @param {ScreenMap} m
 * @param {number} w @param {number} h the canvas's size (labels off screen are skipped)
 */
function drawShapes(ctx, shapes, m, w, h) {
  for (const shape of shapes) {
    ctx.beginPath();
    let minX = Infinity, minY = Infinity;
    for (const line of shape.lines) {
      for (let i = 0; i + 1 < line.length; i += 2) {
        const x = m.x + line[i] * m.s, y = m.y + line[i + 1] * m.s;
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
        if (y < minY || (y === minY && x < minX)) {
          minY = y;
          minX = x;
        }
      }
      if (shape.closed) ctx.closePath();
    }
    if (shape.fill) {
      ctx.fillStyle = shape.fill;
      ctx.fill("evenodd");
    }
    ctx.setLineDash(shape.dash || []);
    ctx.lineJoin = "round";
    if (shape.casing) {
      ctx.strokeStyle = shape.casing;
      ctx.lineWidth = shape.width + 2;
      ctx.stroke();
    }
    ctx.strokeStyle = shape.stroke;
    ctx.lineWidth = shape.width;
    ctx.stroke();
    ctx.setLineDash([]);
    if (shape.label && minX > -200 && minX < w && minY > -20 && minY < h + 20) {
      // a tag of the shape's colour just above its topmost point
      ctx.font = "600 11px sans-serif";
      ctx.textBaseline = "middle";
      const tw = ctx.measureText(shape.label).width;
      const y = Math.max(1, minY - 19);
      roundRect(ctx, minX - 1, y, tw + 10, 16, 3);
      ctx.fillStyle = shape.stroke;
      ctx.fill();
      if (shape.casing) {
        ctx.strokeStyle = shape.casing;
        ctx.lineWidth = 1;
        ctx.stroke();
      }
      ctx.fillStyle = shape.ink;
      ctx.fillText(shape.label, minX + 4, y + 8.5);
    }
  }
}

/** @param {number[]} rgb @param {number} [alpha] */
function rgba(rgb, alpha = 1) {
  const [r, g, b] = (rgb || [0, 0, 0]).map((v) => Math.max(0, Math.min(255, Math.round(v))));
  return alpha === 1 ? `rgb(${r},${g},${b})` : `rgba(${r},${g},${b},${alpha})`;
}

/** @param {number[]} rgb @returns {string} black or white, whichever reads on rgb */
function inkOn(rgb) {
  const [r, g, b] = rgb || [0, 0, 0];
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#1b1c22" : "#ffffff";
}

const CASING = "rgba(25,25,35,0.6)";

/**
 * @param {number[]} colour @param {number[][]} rings @param {string} label
 * @param {number[] | null} dash @returns {Shape}
 */
function ringShape(colour, rings, label, dash) {
  return {
    lines: rings || [],
    closed: true,
    stroke: rgba(colour),
    fill: rgba(colour, 0.15),
    width: 2,
    dash,
    label: shown(label || ""),
    casing: CASING,
    ink: inkOn(colour),
  };
}

/** @param {RegionInfo} region @returns {Shape} */
function regionShape(region) {
  return ringShape(region.colour, region.rings, region.name, null);
}

/**
 * @param {CanvasRenderingContext2D} ctx @param {number} x @param {number} y
 * @param {number} w @param {number} h @param {number} r
 */
function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

// ------------------------------------------------------------------ one viewer

class SlideView {
  /**
   * @param {HTMLElement} host @param {OSDModule} OSD @param {DeepZoomData} data
   * @param {Label} label @param {ViewHooks} hooks @param {boolean} primary
   */
  constructor(host, OSD, data, label, hooks, primary) {
    this.OSD = OSD;
    this.label = label; // {level, name}
    this.frame = el("div", "hmil-dz-frame", host);
    this.frame.tabIndex = -1;
    this.osdEl = el("div", "hmil-dz-osd", this.frame);
    this.title = el("div", "hmil-dz-title", this.frame);
    this.scale = el("div", "hmil-dz-scale", this.frame);
    this.scaleBar = el("div", "hmil-dz-scale-bar", this.scale);
    this.scaleText = el("div", "hmil-dz-scale-text", this.scale);
    this.legend = new Legend(this.frame);
    this.tip = el("div", "hmil-dz-tip", this.frame);
    this.canvasInfo = data.canvas;
    this.slide = data.slide;
    this.pointer = null; // last pointer position over the view (null: outside)
    // what to draw (set by the component, see ViewState)
    this.strategy = "canvas";
    /** @type {Names} */ this.names = { coarse: [], fine: [] };
    /** @type {{coarse: LevelValues, fine: LevelValues} | null} */ this.levels = null;
    /** @type {Partial<Record<Level, Uint8Array[]>>} */ this.codes = {};
    this.visible = true;
    this.alpha = 1;
    this.smooth = 0;
    /** @type {number[][]} */ this.outline = [];
    /** @type {number[] | null} */ this.patchBox = null;
    /** @type {PatchLayer | null} */ this.layer = null;
    /** @type {RegionInfo[]} */ this.regions = [];
    /** @type {Shape[]} */ this.drafts = [];
    /** @type {any} the Annotorious annotator, made when a drawing tool is first chosen */
    this.annotator = null;
    this.drawing = false;
    this.clickTimer = null;
    const source = data.slide ? data.slide.dzi : blankImage(data.canvas);
    this.viewer = OSD({
      element: this.osdEl,
      tileSources: source,
      drawer: "canvas",
      showNavigationControl: false,
      showNavigator: primary,
      navigatorPosition: "TOP_RIGHT",
      navigatorSizeRatio: 0.18,
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
      // the server-rendered layer is a second image of the same extent: the viewport's image
      // coordinates (Annotorious's) stay those of the slide
      silenceMultiImageWarnings: true,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, scrollToZoom: true },
      gestureSettingsTouch: { pinchToZoom: true, dblClickToZoom: true, flickEnabled: true },
    });
    this.viewer.addHandler("animation-finish", () => hooks.onSettled(this));
    this.overlay = el("canvas", "hmil-dz-layer");
    this.viewer.canvas.appendChild(this.overlay);
    this.layerTiles = null;
    this.layerTilesUrl = null;
    this.viewer.addHandler("update-viewport", () => this.draw());
    this.viewer.addHandler("resize", () => this.draw());
    // what is under a still pointer changes when the view moves by keyboard or animation
    this.viewer.addHandler("animation", () => this.rehover());
    this.viewer.addHandler("open", () => {
      hooks.onOpen(this);
      this.draw();
    });
    this.viewer.addHandler("canvas-click", (e) => {
      if (!e.quick || this.drawing) return; // a click of a drawing tool selects no patch
      const p = this.level0(e.position);
      const i = this.layer ? this.layer.patchIndex(p.x, p.y) : -1;
      clearTimeout(this.clickTimer);
      if (i < 0) return;
      // wait: the first click of a double-click (zoom in) must not select a patch
      this.clickTimer = setTimeout(() => {
        this.clickTimer = null;
        hooks.onPatch(i);
      }, CLICK_DELAY_MS);
    });
    this.viewer.addHandler("canvas-double-click", () => {
      clearTimeout(this.clickTimer);
      this.clickTimer = null;
    });
    new OSD.MouseTracker({
      element: this.viewer.canvas,
      moveHandler: (e) => {
        this.pointer = e.position;
        this.hover(e.position);
      },
      leaveHandler: () => {
        this.pointer = null;
        this.tip.style.display = "none";
      },
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

  // the view as level-0 centre and zoom (screen px per level-0 px), for the address
  where() {
    const vp = this.viewer.viewport;
    const c = vp.getCenter(true), w = this.canvasInfo;
    const zoom = 1 / this.level0PerScreenPx();
    return { x: Math.round(w.x0 + c.x * w.w), y: Math.round(w.y0 + c.y * w.w), zoom: +zoom.toPrecision(3) };
  }

  show(v) {
    // centre the level-0 point (x, y) at zoom screen px per level-0 px
    const w = this.canvasInfo;
    const width = this.viewer.container.clientWidth || 1;
    const z = (v.zoom * w.w) / width;
    if (!(isFinite(z) && z > 0 && isFinite(v.x) && isFinite(v.y))) return;
    const vp = this.viewer.viewport;
    vp.zoomTo(Math.min(Math.max(z, vp.getMinZoom()), vp.getMaxZoom()), null, true);
    vp.panTo(new this.OSD.Point((v.x - w.x0) / w.w, (v.y - w.y0) / w.w), true);
  }

  /** @param {ViewState} state */
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
    drawShapes(ctx, this.shapes(), this.screenMap(), w, h);
    if (this.patchBox) {
      const [x, y, s] = this.patchBox;
      const a = this.pixel(x, y), b = this.pixel(x + s, y + s);
      ctx.strokeStyle = "rgb(20,90,255)";
      ctx.lineWidth = 3;
      ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
    }
  }

  /** @returns {Shape[]} the lesion outline, the saved regions, the drafts (in that order) */
  shapes() {
    /** @type {Shape[]} */
    const shapes = [];
    if (this.outline && this.outline.length)
      shapes.push({ lines: this.outline, closed: false, stroke: OUTLINE_COLOUR, fill: null,
        width: 2, dash: null, label: "", casing: null, ink: "" });
    for (const region of this.regions || []) shapes.push(regionShape(region));
    return shapes.concat(this.drafts || []);
  }

  /** @returns {ScreenMap} level-0 px -> this view's screen px */
  screenMap() {
    const c = this.canvasInfo;
    const a = this.pixel(c.x0, c.y0), b = this.pixel(c.x0 + c.w, c.y0);
    const s = (b.x - a.x) / c.w;
    return { x: a.x - c.x0 * s, y: a.y - c.y0 * s, s };
  }

  /**
   * Level-0 px of a point in Annotorious's "image coordinates" (the viewport's: the slide's
   * level 0, or the blank canvas's own pixels), undone the way Annotorious made them.
   * @param {number} x @param {number} y @returns {number[]}
   */
  imageToLevel0(x, y) {
    const v = this.viewer.viewport.imageToViewportCoordinates(x, y);
    const c = this.canvasInfo;
    return [+(c.x0 + v.x * c.w).toFixed(1), +(c.y0 + v.y * c.w).toFixed(1)];
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

  rehover() {
    if (this.pointer) this.hover(this.pointer);
  }

  hover(position) {
    if (!this.layer || !this.codes || this.drawing) {
      this.tip.style.display = "none";
      return;
    }
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
    for (const level of LEVELS) {
      const names = this.names[level];
      const info = this.levels[level];
      const parts = names.map((n, k) => {
        const scale = info.scales[info.scale_of[k]];
        const v = escapeHtml(scale.texts[this.codes[level][k][i]]);
        const cur = level === this.label.level && n === this.label.name;
        const name = escapeHtml(shown(n));
        return cur ? `<b>${name} ${v}</b>` : `${name} ${v}`;
      });
      rows.push(`<div><i>${level}</i> ${parts.join(" · ")}</div>`);
    }
    this.tip.innerHTML = `<div><b>patch ${i}</b> at (${x}, ${y}) — click for details</div>` + rows.join("");
    this.tip.style.display = "block";
    const fw = this.frame.clientWidth;
    this.tip.style.left = Math.max(0, Math.min(position.x + 14, fw - 340)) + "px";
    this.tip.style.top = position.y + 14 + "px";
  }

  setTilesLayer(url, alpha) {
    // the server-rendered overlay of one label as a second tiled image (null: none)
    if (this.layerTilesUrl === url) {
      if (this.layerTiles) this.layerTiles.setOpacity(alpha);
      return;
    }
    if (this.layerTiles) this.viewer.world.removeItem(this.layerTiles);
    this.layerTiles = null;
    this.layerTilesUrl = url;
    if (!url) return;
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
    clearTimeout(this.clickTimer);
    if (this.annotator) this.annotator.destroy();
    this.annotator = null;
    this.viewer.destroy();
    this.frame.remove();
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
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

/**
 * The level-0 points of an Annotorious selector (rectangle or polygon), without repeats.
 * @param {SlideView} view @param {any} selector @returns {number[][]}
 */
function shapePoints(view, selector) {
  const g = selector && selector.geometry;
  if (!g) return [];
  /** @type {number[][]} */
  let raw = [];
  if (selector.type === "RECTANGLE")
    raw = [[g.x, g.y], [g.x + g.w, g.y], [g.x + g.w, g.y + g.h], [g.x, g.y + g.h]];
  else if (Array.isArray(g.points)) raw = g.points;
  const points = [];
  for (const [x, y] of raw) {
    if (!isFinite(x) || !isFinite(y)) continue;
    const p = view.imageToLevel0(x, y);
    const last = points[points.length - 1];
    if (!last || last[0] !== p[0] || last[1] !== p[1]) points.push(p);
  }
  const first = points[0], last = points[points.length - 1];
  if (points.length > 1 && first[0] === last[0] && first[1] === last[1]) points.pop();
  return points;
}

/** @param {number[][]} points a ring @returns {number} its area (shoelace, absolute) */
function polygonArea(points) {
  let a = 0;
  for (let i = 0; i < points.length; i++) {
    const [x0, y0] = points[i], [x1, y1] = points[(i + 1) % points.length];
    a += x0 * y1 - x1 * y0;
  }
  return Math.abs(a) / 2;
}

/** @param {string} name @returns {string} letters, digits, dot, dash and underscore only */
function safeFileName(name) {
  const safe = name.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[._-]+/, "").slice(0, 150);
  return safe || "view";
}

/** @param {Blob} blob @param {string} file */
function download(blob, file) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = file;
  a.style.display = "none";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/**
 * A view's scale bar as shown (box, bar, text) onto an export.
 * @param {CanvasRenderingContext2D} ctx @param {SlideView} view
 * @param {{left: number, top: number}} origin
 */
function paintScale(ctx, view, origin) {
  const box = view.scale.getBoundingClientRect(), bar = view.scaleBar.getBoundingClientRect();
  if (!box.width) return;
  ctx.fillStyle = "rgba(255,255,255,0.88)";
  roundRect(ctx, box.left - origin.left, box.top - origin.top, box.width, box.height, 3);
  ctx.fill();
  ctx.fillStyle = "#262730";
  ctx.fillRect(bar.left - origin.left, bar.top - origin.top, bar.width, bar.height);
  paintText(ctx, view.scaleText, origin);
}

/**
 * An element's text where it is on screen, in its font and colour, wrapped at its width as
 * the page wraps it (word by word).
 * @param {CanvasRenderingContext2D} ctx @param {HTMLElement} e
 * @param {{left: number, top: number}} origin
 */
function paintText(ctx, e, origin) {
  const text = e.textContent;
  if (!text) return;
  const r = e.getBoundingClientRect();
  const style = getComputedStyle(e);
  ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  ctx.fillStyle = style.color;
  ctx.textBaseline = "top";
  const size = parseFloat(style.fontSize) || 11;
  const step = parseFloat(style.lineHeight) || size * 1.3;
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    const next = line ? line + " " + word : word;
    if (line && ctx.measureText(next).width > r.width + 1) {
      lines.push(line);
      line = word;
    } else line = next;
  }
  lines.push(line);
  const x = r.left - origin.left, y = r.top - origin.top + (step - size) / 2;
  lines.forEach((t, i) => ctx.fillText(t, x, y + i * step));
}

/**
 * @param {CanvasRenderingContext2D} ctx @param {string} text @param {number} x
 * @param {number} y @param {string} font
 */
function paintLabel(ctx, text, x, y, font) {
  ctx.font = font;
  ctx.textBaseline = "top";
  const w = ctx.measureText(text).width;
  ctx.fillStyle = "rgba(255,255,255,0.88)";
  roundRect(ctx, x, y, w + 12, 18, 3);
  ctx.fill();
  ctx.fillStyle = "#262730";
  ctx.fillText(text, x + 6, y + 2);
}

function gridShape(n, width, height) {
  // columns and rows of n small views filling width x height with views close to the
  // slide's aspect (wider than tall)
  let best = { cols: n, rows: 1, score: -1 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = width / cols, h = height / rows;
    const score = Math.min(w, h * 1.4) * (n / (cols * rows)) ** 0.25;
    if (score > best.score) best = { cols, rows, score };
  }
  return best;
}

// ------------------------------------------------------------------ the component

class DeepZoom {
  /** @param {HTMLElement} root @param {OSDModule} OSD */
  constructor(root, OSD) {
    this.OSD = OSD;
    this.box = el("div", "hmil-dz", root);
    this.bar = el("div", "hmil-dz-bar", this.box);
    this.navBox = el("span", "hmil-dz-nav", this.bar);
    this.prevButton = el("button", "hmil-dz-prev", this.navBox, "◀ prev");
    this.prevButton.title = "previous slide of the list (key p)";
    this.nextButton = el("button", "hmil-dz-next", this.navBox, "next ▶");
    this.nextButton.title = "next slide of the list (key n)";
    this.levelBox = el("span", "hmil-dz-levels", this.bar);
    this.chips = el("span", "hmil-dz-chips", this.bar);
    this.modeButton = el("button", "hmil-dz-mode", this.bar, "all labels");
    this.modeButton.title = "every label of the level side by side, one shared scale (key a)";
    const op = el("label", "hmil-dz-opacity", this.bar, "opacity ");
    this.opacityLabel = op;
    this.opacity = el("input", "", op);
    this.opacity.type = "range";
    this.opacity.min = "0";
    this.opacity.max = "1";
    this.opacity.step = "0.05";
    const vis = el("label", "hmil-dz-visible", this.bar);
    this.visibleLabel = vis;
    this.visibleBox = el("input", "", vis);
    this.visibleBox.type = "checkbox";
    this.visibleBox.checked = true;
    vis.appendChild(document.createTextNode(" attention"));
    this.fit = el("button", "hmil-dz-fit", this.bar, "fit");
    this.fit.title = "whole slide (key 0)";
    this.full = el("button", "hmil-dz-full", this.bar, "full screen");
    this.full.title = "full screen (key f; Esc leaves)";
    // drawing a region (shown when the page can save one) and the PNG export
    this.drawBox = el("span", "hmil-dz-draw", this.bar);
    /** @type {Record<string, HTMLButtonElement>} */
    this.toolButtons = {};
    for (const [tool, text, title] of TOOLS) {
      const b = /** @type {HTMLButtonElement} */ (el("button", "hmil-dz-tool", this.drawBox, text));
      b.dataset.tool = tool;
      b.title = title;
      b.addEventListener("click", () => this.chooseTool(tool));
      this.toolButtons[tool] = b;
    }
    this.pngButton = el("button", "hmil-dz-png", this.bar, "PNG");
    this.pngButton.title = "download the view as a PNG: slide, attention, regions, legend, " +
      "scale bar and a caption (slide, label, truth, model)";
    this.pngButton.addEventListener("click", () => this.exportPng());
    this.noteBox = el("div", "hmil-dz-note", this.box);
    // small multiples on one scale share one legend above them
    this.sharedLegend = new Legend(this.box);
    this.sharedLegend.box.classList.add("hmil-dz-legend-shared");
    this.grid = el("div", "hmil-dz-grid", this.box);
    this.help = el("div", "hmil-dz-help", this.box, HELP);
    this.views = [];
    this.buildKey = null;
    this.viewId = null;
    this.layer = null;
    this.triggers = null;
    this.syncing = false;
    this.pending = null; // {level, label} chosen on the view, not yet echoed by the page
    this.pendingSent = 0; // when the page was told (performance.now)
    this.labelTimer = null;
    this.urlTimer = null;
    this.mode = "single";
    this.pendingMode = null;
    /** @type {string | null} the drawing tool in use */
    this.tool = null;
    /** @type {Shape[]} shapes drawn and sent to the page, until it sends them back */
    this.drafts = [];
    this.draftRegions = -1; // the number of saved regions when the drafts were sent
    this.draftTimer = null;
    this.opacity.addEventListener("input", () => {
      this.alpha = Number(this.opacity.value);
      this.apply();
    });
    this.opacity.addEventListener("change", () => {
      writeAddress({ alpha: this.alpha });
      this.triggers.setTriggerValue("alpha", this.alpha);
    });
    this.visibleBox.addEventListener("change", () => this.apply());
    this.fit.addEventListener("click", () => this.views.forEach((v) => v.viewer.viewport.goHome()));
    this.full.addEventListener("click", () => this.toggleFullScreen());
    this.modeButton.addEventListener("click", () => this.setMode(this.mode === "all" ? "single" : "all"));
    this.prevButton.addEventListener("click", () => this.navigate(-1));
    this.nextButton.addEventListener("click", () => this.navigate(1));
    this.onKey = (e) => this.key(e);
    this.onResize = () => this.fitHeight();
    document.addEventListener("keydown", this.onKey);
    window.addEventListener("resize", this.onResize);
    document.addEventListener("fullscreenchange", this.onResize);
  }

  /** @param {DeepZoomData} data @param {Triggers} triggers */
  update(data, triggers) {
    this.triggers = triggers;
    this.data = data;
    const show = data.show;
    const newSlide = data.view_id !== this.viewId;
    if (newSlide) {
      // nothing of the previous slide carries over: label, pending choice, tooltip, mode
      this.viewId = data.view_id;
      this.pending = null;
      clearTimeout(this.labelTimer);
      this.labelTimer = null;
      this.current = null;
    }
    // "all labels" chosen on the view holds until the page echoes it
    if (this.pendingMode && show.mode === this.pendingMode) this.pendingMode = null;
    this.mode = data.layer ? this.pendingMode || (show.mode === "all" ? "all" : "single") : "single";
    const layerKey = data.layer ? data.layer.values_key : null;
    if (layerKey !== this.layerKey) {
      this.layerKey = layerKey;
      this.names = data.layer ? data.layer.names : { coarse: [], fine: [] };
      this.levels = data.layer ? data.layer.levels : null;
      this.codes = {};
      if (data.layer) {
        for (const level of LEVELS) this.codes[level] = data.layer.levels[level].codes.map(bytes);
        if (!this.layer || this.layer.grid.cells !== data.layer.grid.cells)
          this.layer = new PatchLayer(data.layer.grid);
        this.layer.key = null;
        this.views.forEach((v) => v.ownLayer && (v.ownLayer.key = null));
      } else this.layer = null;
    }
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
    // keep the view's own choice until the page echoes it (the page wins otherwise)
    if (!this.current || (serverMoved && !this.pending))
      this.current = { level: show.level, name: show.label };
    const key = JSON.stringify([data.view_id, data.slide && data.slide.dzi, data.canvas,
      this.mode, this.mode === "all" ? this.current.level : ""]);
    if (key !== this.buildKey) this.build(data);
    this.buildKey = key;
    this.noteBox.textContent = data.note || "";
    this.noteBox.style.display = data.note ? "" : "none";
    const drawable = !!(data.draw && data.draw.enabled);
    this.drawBox.style.display = drawable ? "" : "none";
    const reviewing = Boolean(data.nav && data.nav.unreviewed !== undefined);
    this.help.textContent = HELP + (reviewing ? HELP_REVIEW : "") + (drawable ? HELP_DRAW : "");
    if (!drawable && this.tool) this.stopTool();
    // a drawn shape stays (dashed) until the page sends the saved regions back
    if (this.drafts.length && (newSlide || (data.regions || []).length !== this.draftRegions))
      this.clearDrafts(false);
    this.navBox.style.display = data.nav ? "" : "none";
    if (data.nav) {
      this.prevButton.disabled = !data.nav.has_prev;
      this.nextButton.disabled = !data.nav.has_next;
    }
    this.modeButton.classList.toggle("on", this.mode === "all");
    // nothing to overlay (a slide alone): no layer controls
    for (const e of [this.modeButton, this.opacityLabel, this.visibleLabel])
      e.style.display = data.layer ? "" : "none";
    this.chipsFor(this.current.level);
    this.apply();
    this.fitHeight();
    if (data.viewport && data.viewport.nonce !== this.viewportNonce) {
      this.viewportNonce = data.viewport.nonce;
      this.whenOpen(this.views[0], (v) => v.show(data.viewport));
    }
    if (data.goto && data.goto.nonce !== this.gotoNonce) {
      this.gotoNonce = data.goto.nonce;
      this.goTo(data.goto);
    }
    if (newSlide) {
      writeAddress({ level: this.current.level, label: this.current.name });
      return;
    }
    // the page may have rewritten the address (a new style): put the view's place back
    const first = this.views[0];
    if (first && first.viewer.world.getItemCount()) this.settled(first);
  }

  whenOpen(view, fn) {
    if (!view) return;
    if (view.viewer.world.getItemCount()) fn(view);
    else view.viewer.addOnceHandler("open", () => fn(view));
  }

  /** @param {DeepZoomData} data */
  build(data) {
    this.stopTool();
    this.views.forEach((v) => v.destroy());
    this.views = [];
    this.grid.innerHTML = "";
    const all = this.mode === "all" && data.layer;
    const level = this.current.level;
    const labels = all
      ? data.layer.names[level].map((n) => ({ level, name: n }))
      : [{ level: this.current.level, name: this.current.name }];
    this.grid.className = all ? "hmil-dz-grid hmil-dz-multi" : "hmil-dz-grid";
    const hooks = {
      onPatch: (i) => this.pick(i),
      onOpen: (v) => this.opened(v),
      onSettled: (v) => this.settled(v),
    };
    labels.forEach((label, k) => {
      const view = new SlideView(this.grid, this.OSD, data, label, hooks, !all && k === 0);
      this.views.push(view);
      view.viewer.addHandler("viewport-change", () => this.sync(view));
    });
    this.viewerKeyboard(this.views[0]);
    this.fitHeight();
  }

  opened(view) {
    if (view !== this.views[0] || this.views.length > 1) return;
    // a rebuilt single view (after "all labels") keeps the multiples' viewport
    if (this.keptViewport) {
      view.show(this.keptViewport);
      this.keptViewport = null;
    }
  }

  settled(view) {
    if (view !== this.views[0]) return;
    clearTimeout(this.urlTimer);
    this.urlTimer = setTimeout(() => writeAddress(view.where()), URL_EVERY_MS);
  }

  fitHeight() {
    // the view fills the window below its own top (never less than min_height)
    const full = document.fullscreenElement === this.box;
    const top = full ? this.grid.getBoundingClientRect().top : this.grid.getBoundingClientRect().top + window.scrollY;
    const help = full ? 8 : this.help.offsetHeight + 16;
    const min = (this.data && this.data.min_height) || 420;
    const avail = Math.max(min, window.innerHeight - top - help);
    const n = this.views.length;
    if (n > 1) {
      const shape = gridShape(n, this.grid.clientWidth || 900, avail);
      const h = Math.max(160, Math.floor((avail - 6 * (shape.rows - 1)) / shape.rows));
      this.grid.style.gridTemplateColumns = `repeat(${shape.cols}, 1fr)`;
      this.grid.style.setProperty("--hmil-dz-h", h + "px");
    } else {
      this.grid.style.gridTemplateColumns = "";
      this.grid.style.setProperty("--hmil-dz-h", avail + "px");
    }
  }

  toggleFullScreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (this.box.requestFullscreen) this.box.requestFullscreen().catch(() => {});
  }

  key(e) {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey || !this.data) return;
    const actions = {
      n: () => this.navigate(1),
      p: () => this.navigate(-1),
      u: () => this.nextUnreviewed(),
      t: () => this.toggleTruth(),
      f: () => this.toggleFullScreen(),
      a: () => this.data.layer && this.setMode(this.mode === "all" ? "single" : "all"),
    };
    if (this.tool) actions.Escape = () => this.stopTool();
    const act = actions[e.key];
    if (!act) return;
    e.preventDefault();
    act();
  }

  nextUnreviewed() {
    const nav = this.data && this.data.nav;
    if (!nav || !nav.unreviewed) return;
    this.tipsOff();
    this.triggers.setTriggerValue("nav", "unreviewed");
  }

  navigate(step) {
    const nav = this.data && this.data.nav;
    if (!nav || (step < 0 && !nav.has_prev) || (step > 0 && !nav.has_next)) return;
    this.tipsOff();
    this.triggers.setTriggerValue("nav", step);
  }

  toggleTruth() {
    // true label ↔ predicted label, at the level shown
    const layer = this.data.layer, truth = this.data.truth;
    if (!layer) return;
    const level = this.current.level;
    const pred = layer.predicted[level];
    const tru = truth && truth[level];
    const target = tru && this.current.name !== tru ? tru : pred;
    if (target && target !== this.current.name) this.choose(level, target);
  }

  setMode(mode) {
    if (mode === this.mode) return;
    if (mode === "single" && this.views[0]) this.keptViewport = this.views[0].where();
    this.pendingMode = mode;
    this.update(this.data, this.triggers);
    writeAddress({ mode: mode === "all" ? "all" : null });
    this.triggers.setTriggerValue("mode", mode);
  }

  tipsOff() {
    this.views.forEach((v) => (v.tip.style.display = "none"));
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
    for (const lv of LEVELS) {
      const b = el("button", "hmil-dz-level" + (lv === level ? " on" : ""), this.levelBox, lv);
      b.addEventListener("click", () => this.choose(lv, this.defaultLabel(lv)));
    }
    const truth = this.data.truth && this.data.truth[level];
    const pred = layer.predicted[level];
    for (const name of layer.names[level]) {
      const on = name === this.current.name && level === this.current.level;
      const b = el("button", "hmil-dz-chip" + (on ? " on" : ""), this.chips, shown(name));
      b.dataset.label = name;
      const marks = [];
      if (name === pred) {
        b.classList.add("pred");
        marks.push("predicted");
      }
      if (name === truth) {
        b.classList.add("truth");
        marks.push("true label");
      }
      if (marks.length) b.title = marks.join(" · ");
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
    const levelChanged = level !== this.current.level;
    this.current = { level, name };
    this.pending = { level, label: name };
    if (levelChanged && this.mode === "all") this.update(this.data, this.triggers);
    this.chipsFor(level);
    this.apply();
    writeAddress({ level, label: name });
    clearTimeout(this.labelTimer);
    this.labelTimer = setTimeout(() => {
      this.labelTimer = null;
      this.pendingSent = performance.now();
      this.triggers.setTriggerValue("label", this.pending);
    }, LABEL_SETTLE_MS);
  }

  apply() {
    const show = this.data.show;
    const visible = this.visibleBox.checked;
    const single = this.views.length === 1;
    const scales = new Set();
    for (const v of this.views) {
      if (single) v.label = this.current;
      const label = v.label;
      v.title.textContent = single ? "" : shown(label.name);
      /** @type {ViewState} */
      let state = {
        strategy: this.data.layer ? this.data.layer.strategy : "canvas",
        names: this.names,
        levels: this.levels,
        codes: this.codes,
        visible,
        alpha: this.alpha,
        smooth: show.smooth,
        outline: show.outline,
        patchBox: this.data.patch_box,
        layer: null,
        regions: this.data.regions || [],
        drafts: this.drafts,
      };
      let scale = null;
      if (this.layer) {
        const k = this.names[label.level].indexOf(label.name);
        const info = this.levels[label.level];
        scale = k >= 0 ? info.scales[info.scale_of[k]] : null;
        const key = `${label.level}/${k}/${this.lutKey}/${this.layerKey}`;
        if (k >= 0 && state.strategy === "canvas" && single) {
          this.layer.colour(this.codes[label.level][k], this.lut, key);
          state.layer = this.layer;
        } else if (k >= 0 && state.strategy === "canvas") {
          // small multiples: one coloured copy per view
          if (!v.ownLayer) v.ownLayer = new PatchLayer(this.data.layer.grid);
          v.ownLayer.colour(this.codes[label.level][k], this.lut, key);
          state.layer = v.ownLayer;
        } else if (k >= 0) {
          state.layer = this.layer; // hover lookups
          v.setTilesLayer(visible ? this.data.layer.tiles[label.level][k] : null, this.alpha);
        }
      }
      scales.add(scale);
      v.legend.set(visible ? scale : null, this.lut, this.lutKey, single ? label.name : "");
      v.set(state);
    }
    // small multiples on one scale: one legend above them instead of one per view
    const shared = !single && scales.size === 1 && visible ? [...scales][0] : null;
    this.sharedLegend.set(shared, this.lut, this.lutKey, shared ? "every label" : "");
    if (shared) this.views.forEach((v) => v.legend.set(null));
  }

  pick(index) {
    this.triggers.setTriggerValue("patch", index);
  }

  // ---------------------------------------------------------------- drawing a region

  /** @param {string} tool "rectangle" | "polygon"; the tool in use again: stop drawing */
  chooseTool(tool) {
    if (this.tool === tool) {
      this.stopTool();
      return;
    }
    this.stopTool();
    this.tool = tool;
    this.markTools();
    loadAnnotorious(this.data.osd_url).then((Anno) => {
      if (this.tool !== tool) return; // cancelled while loading
      for (const v of this.views) this.whenOpen(v, () => this.tool === tool && this.annotate(v, Anno, tool));
    }).catch((err) => {
      this.stopTool();
      this.say(err.message);
    });
  }

  /** @param {SlideView} view @param {AnnoModule} Anno @param {string} tool */
  annotate(view, Anno, tool) {
    if (!view.annotator) {
      view.annotator = Anno.createOSDAnnotator(view.viewer, { drawingEnabled: false });
      view.annotator.on("createAnnotation", (a) => this.finished(view, a));
    }
    // a rectangle is dragged (a drag draws instead of panning); a polygon's corners are
    // clicked (a drag between clicks pans); the wheel zooms either way
    view.annotator.setDrawingMode(DRAWING_MODE[tool] || "click");
    view.annotator.setDrawingTool(tool);
    view.annotator.setDrawingEnabled(true);
    view.viewer.gestureSettingsMouse.dblClickToZoom = false; // a double-click closes a polygon
    view.drawing = true;
    view.tip.style.display = "none";
    view.frame.classList.add("hmil-dz-drawing");
  }

  stopTool() {
    this.tool = null;
    for (const v of this.views) {
      if (v.annotator) {
        v.annotator.cancelDrawing();
        v.annotator.setDrawingEnabled(false);
      }
      v.drawing = false;
      v.viewer.gestureSettingsMouse.dblClickToZoom = true;
      v.frame.classList.remove("hmil-dz-drawing");
    }
    this.markTools();
  }

  markTools() {
    for (const [tool, b] of Object.entries(this.toolButtons)) b.classList.toggle("on", tool === this.tool);
  }

  /**
   * A shape is finished: its level-0 points go to the page (which saves it and sends it back
   * in data.regions); Annotorious forgets it, the view draws it dashed meanwhile.
   * @param {SlideView} view @param {any} annotation Annotorious's W3C-free image annotation
   */
  finished(view, annotation) {
    const selector = annotation && annotation.target && annotation.target.selector;
    setTimeout(() => view.annotator && view.annotator.clearAnnotations(), 0);
    const shape = this.tool || "polygon";
    this.stopTool();
    const points = shapePoints(view, selector);
    if (points.length < 3 || !(polygonArea(points) > 0)) return;
    const nonce = Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
    const kind = selector.type === "RECTANGLE" ? "rectangle" : shape;
    this.triggers.setTriggerValue("region", { nonce, shape: kind, points });
    const colour = (this.data.draw && this.data.draw.colour) || [20, 90, 255];
    this.drafts = this.drafts.concat([ringShape(colour, [points.flat()], "saving…", [6, 4])]);
    this.draftRegions = (this.data.regions || []).length;
    clearTimeout(this.draftTimer);
    this.draftTimer = setTimeout(() => this.clearDrafts(true), DRAFT_MS);
    this.apply();
  }

  /** @param {boolean} redraw */
  clearDrafts(redraw) {
    clearTimeout(this.draftTimer);
    this.draftTimer = null;
    this.drafts = [];
    if (redraw) this.apply();
  }

  /** @param {string} text a message above the view until the page's next note */
  say(text) {
    this.noteBox.textContent = text;
    this.noteBox.style.display = "";
  }

  // ---------------------------------------------------------------- PNG export

  /** @returns {{text: string, file: string}} the caption line and the file name */
  caption() {
    const data = this.data, c = data.caption;
    const multi = this.views.length > 1;
    const level = this.current.level, name = this.current.name;
    const slide = (c && c.slide_id) || data.view_id || "view";
    let label = c ? c.label : "";
    if (data.layer) label = `${level} · ${multi ? "every label" : name}`;
    const tru = data.truth && data.truth[level];
    const truth = (c && c.truth) || (tru ? `${level} · ${tru}` : "");
    const parts = [slide, label && "shown: " + label, truth && "truth: " + truth,
      c && c.model && "model: " + c.model].filter(Boolean);
    const file = safeFileName(`${slide}_${level}-${data.layer && multi ? "all" : name || "slide"}`);
    return { text: shown(parts.join("   ·   ")), file: file + ".png" };
  }

  /**
   * The view as one PNG, at its size on screen: each view's tiles (OpenSeadragon's canvas) and
   * its own canvas (attention layer, outline, regions) as drawn, its legend and scale bar as
   * shown, a caption band on top; downloaded through a link to a blob.
   * @returns {HTMLCanvasElement | null}
   */
  exportPng() {
    if (!this.views.length || !this.data) return null;
    const multi = this.views.length > 1;
    const area = (multi ? this.grid : this.views[0].frame).getBoundingClientRect();
    const W = Math.max(1, Math.round(area.width)), H = Math.max(1, Math.round(area.height));
    const dpr = window.devicePixelRatio || 1;
    const out = document.createElement("canvas");
    out.width = Math.round(W * dpr);
    out.height = Math.round(H * dpr);
    const ctx = out.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, W, H);
    const caption = this.caption();
    const band = 22;
    for (const v of this.views) {
      const r = v.frame.getBoundingClientRect();
      const x = r.left - area.left, y = r.top - area.top;
      ctx.save();
      ctx.beginPath();
      ctx.rect(x, y, r.width, r.height);
      ctx.clip();
      ctx.fillStyle = "#e4e6eb";
      ctx.fillRect(x, y, r.width, r.height);
      const drawer = v.viewer.drawer && v.viewer.drawer.canvas;
      for (const c of [drawer, v.overlay]) {
        if (!(c instanceof HTMLCanvasElement)) continue;
        const b = c.getBoundingClientRect();
        ctx.drawImage(c, b.left - area.left, b.top - area.top, b.width, b.height);
      }
      v.legend.paint(ctx, area);
      if (v.slide && v.slide.mpp) paintScale(ctx, v, area);
      if (multi && v.title.textContent) {
        const t = v.title.getBoundingClientRect();
        const ty = t.top - area.top < band ? band + 2 : t.top - area.top;
        paintLabel(ctx, v.title.textContent, t.left - area.left, ty, "600 13px sans-serif");
      }
      ctx.restore();
    }
    if (multi && this.sharedLegend.scale) {
      // above the views on screen: bottom right of the image here
      const s = this.sharedLegend.box.getBoundingClientRect();
      this.sharedLegend.paint(ctx, { left: s.left - (W - s.width - 8), top: s.top - (H - s.height - 34) });
    }
    ctx.fillStyle = "rgba(255,255,255,0.9)";
    ctx.fillRect(0, 0, W, band);
    ctx.font = "13px sans-serif";
    ctx.fillStyle = "#262730";
    ctx.textBaseline = "middle";
    ctx.fillText(caption.text, 8, band / 2 + 1, W - 16);
    try {
      out.toBlob((blob) => blob && download(blob, caption.file), "image/png");
    } catch (err) {
      this.say("cannot export the view: " + err.message);
    }
    return out;
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
    this.whenOpen(v, () => v.viewer.viewport.fitBounds(rect, false));
  }

  destroy() {
    clearTimeout(this.labelTimer);
    clearTimeout(this.urlTimer);
    clearTimeout(this.draftTimer);
    document.removeEventListener("keydown", this.onKey);
    window.removeEventListener("resize", this.onResize);
    document.removeEventListener("fullscreenchange", this.onResize);
    this.views.forEach((v) => v.destroy());
    this.box.remove();
  }
}

/**
 * @param {{data: DeepZoomData, parentElement: HTMLElement,
 *   setTriggerValue: Triggers["setTriggerValue"]}} component
 */
export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const root = parentElement;
  let entry = VIEWS.get(root);
  if (!entry) {
    entry = { gen: 0, view: null };
    VIEWS.set(root, entry);
  }
  const gen = ++entry.gen;
  loadOSD(data.osd_url).then((OSD) => {
    if (gen !== entry.gen) return; // a newer call took over
    if (!entry.view) entry.view = new DeepZoom(root, OSD);
    entry.view.update(data, { setTriggerValue });
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
