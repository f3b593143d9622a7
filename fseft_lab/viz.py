"""Looking at CT: orthogonal slices with label overlays, and an interactive slice viewer.

Views follow the radiological convention: the patient's right is on the left of the screen,
anterior is up in axial views, superior is up in coronal and sagittal views; R/L (A/P in
sagittal views) markers on the panels say so, and each panel's title names its CT window
(:data:`WINDOWS`: abdominal by default, lung where lung structures are shown). Arrays are
(X, Y, Z) in RAS (as :mod:`fseft_lab.data.transforms` leaves them), optionally with a leading
channel. :func:`show` opens :class:`SliceViewer` in a live notebook and falls back to a static
figure when no frontend can draw widgets (papermill, nbval, scripts, ``FSEFT_HEADLESS=1``);
:func:`show3d` opens a 3-D viewer (ipyniivue) there and draws nothing headless.
"""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, to_hex, to_rgb

from fseft_lab.anatomy import ALL_STRUCTURES

VIEWS = ("axial", "coronal", "sagittal")
#: Named CT display windows as (width, level) in HU.
WINDOWS = {"abdominal": (400, 40), "lung": (1500, -600)}
#: Screen-left and screen-right patient directions per view (radiological convention).
ORIENTATION = {"axial": ("R", "L"), "coronal": ("R", "L"), "sagittal": ("A", "P")}
TRUTH_OUTLINE = "yellow"   # the truth's outline over a prediction (compare_figure)


def _array(x) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    return x[0] if x.ndim == 4 else x


def structure_color(name: str) -> tuple:
    """A fixed colour per structure, the same in every figure of the course, never a grey (which
    would vanish over the CT): matplotlib's tab20 without its two greys, then tab20b."""
    palette = [c for c in plt.get_cmap("tab20").colors if len(set(c)) > 1] + list(plt.get_cmap("tab20b").colors)
    i = ALL_STRUCTURES.index(name) if name in ALL_STRUCTURES else hash(name)
    return (*palette[i % len(palette)], 1.0)


def _slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """2-D slice ready for ``imshow(origin='lower')`` in the radiological convention."""
    if view == "axial":
        return volume[::-1, :, index].T       # (Y, X): anterior up, patient right on the left
    if view == "coronal":
        return volume[::-1, index, :].T       # (Z, X): superior up
    if view == "sagittal":
        return volume[index, ::-1, :].T       # (Z, Y): superior up, anterior on the left
    raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")


def default_window(structures=()) -> str:
    """The lung window where any of ``structures`` is in the lungs, else the abdominal one."""
    return "lung" if any("lung" in s for s in structures) else "abdominal"


def _window_range(window, windowed: bool) -> tuple[tuple[float, float], str]:
    """(low, high) display range and its name for the title; ``window`` is a name of
    :data:`WINDOWS` or a (low, high) HU range. Images already windowed to [0, 1] show as they are."""
    if windowed:
        return (0.0, 1.0), "model window (0-1)"
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose one of {sorted(WINDOWS)} or give (low, high) in HU")
        width, level = WINDOWS[window]
        return (level - width / 2, level + width / 2), f"{window} W{width}/L{level}"
    low, high = window
    return (low, high), f"W{high - low:g}/L{(low + high) / 2:g}"


def structure_legend(fig, structures, label=None, truth_outline=False, **kwargs):
    """Legend: each structure's overlay colour and name (only those present in ``label``
    when it is given), and the truth outline of :func:`compare_figure` when ``truth_outline``.
    ``fig`` is a figure, or an axis of its own beside the image (turned off: the legend fills it)."""
    present = None if label is None else set(np.unique(_array(label)).tolist())
    shown = [s for i, s in enumerate(structures, 1) if present is None or i in present]
    handles = [plt.Rectangle((0, 0), 1, 1, color=structure_color(s)) for s in shown]
    if truth_outline:
        handles.append(plt.Line2D([], [], color=TRUTH_OUTLINE, lw=1.5))
        shown = [f"{s} (prediction)" for s in shown] + ["truth (outline)"]
    if isinstance(fig, plt.Axes):
        fig.set_axis_off()
        kwargs = {"loc": "center left", "borderaxespad": 0, **kwargs}
    return fig.legend(handles, shown, fontsize=7, frameon=False, **{"loc": "center right", **kwargs})


def _aspect(view: str, spacing) -> float:
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def draw_slice(ax, image, label=None, structures=(), view="axial", index=None, spacing=(1, 1, 1),
               window=None, opacity=0.45, show=None):
    """Draw one slice of ``image`` with ``label`` overlaid on a matplotlib axis.

    Args:
        image: (X, Y, Z) CT in HU or windowed to [0, 1].
        label: (X, Y, Z) integer map; value ``i`` is ``structures[i - 1]``.
        view: ``axial``, ``coronal`` or ``sagittal``.
        index: slice index along the view's axis (default: centre, or the label's centre).
        window: a name of :data:`WINDOWS` or (low, high) in HU; default the lung window where
            lung structures are overlaid, else the abdominal one (images windowed to [0, 1] show as they are).
        show: structure names to overlay (default: all).
    """
    image = _array(image)
    label = None if label is None else _array(label)
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
    if index is None:
        index = int(np.argwhere(label > 0)[:, axis].mean()) if label is not None and label.any() else image.shape[axis] // 2
    (low, high), window_name = _window_range(window or default_window(structures), image.max() <= 1.0)
    ax.imshow(_slice(image, view, index), cmap="gray", vmin=low, vmax=high, origin="lower",
              aspect=_aspect(view, spacing), interpolation="nearest")
    if label is not None and structures:
        lab = _slice(label, view, index)
        colours = [(0, 0, 0, 0)] + [structure_color(s) if (show is None or s in show) else (0, 0, 0, 0) for s in structures]
        ax.imshow(np.ma.masked_equal(lab, 0), cmap=ListedColormap(colours), vmin=0, vmax=len(structures),
                  alpha=opacity, origin="lower", aspect=_aspect(view, spacing), interpolation="nearest")
    for x, text, align in ((0.02, ORIENTATION[view][0], "left"), (0.98, ORIENTATION[view][1], "right")):
        ax.text(x, 0.5, text, transform=ax.transAxes, ha=align, va="center", color="orange", fontsize=8, fontweight="bold")
    ax.set_title(f"{view} {index}, {window_name}", fontsize=8)
    ax.set_axis_off()
    return index


def overlay_figure(image, label=None, structures=(), spacing=(1, 1, 1), title=None, window=None,
                   views=VIEWS, legend=True, size=3.2):
    """Static figure: axial, coronal and sagittal slices through the labels' centre."""
    fig, axes = plt.subplots(1, len(views), figsize=(size * len(views) + (1.6 if legend else 0), size))
    for ax, view in zip(np.atleast_1d(axes), views):
        draw_slice(ax, image, label, structures, view, spacing=spacing, window=window)
    if legend and structures and label is not None:
        structure_legend(fig, structures, label)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82 if legend and structures else 1, 1))
    return fig


def _has_frontend() -> bool:
    from fseft_lab.progress import in_notebook_kernel

    return not os.environ.get("FSEFT_HEADLESS") and in_notebook_kernel()


class SliceViewer:
    """Interactive viewer: view, slice, window level/width, overlay opacity and structures.

    >>> SliceViewer(image, label, structures, spacing=(3, 3, 3)).widget   # doctest: +SKIP
    """

    def __init__(self, image, label=None, structures=(), spacing=(1, 1, 1)):
        import ipywidgets as w

        self.image, self.label = _array(image), None if label is None else _array(label)
        self.structures, self.spacing = tuple(structures), spacing
        windowed = self.image.max() <= 1.0
        self.view = w.Dropdown(options=VIEWS, value="axial", description="view")
        self.index = w.IntSlider(value=self.image.shape[2] // 2, min=0, max=self.image.shape[2] - 1, description="slice")
        self.level = w.FloatSlider(value=0.5 if windowed else 40, min=0 if windowed else -1000, max=1 if windowed else 1500,
                                   step=0.01 if windowed else 5, description="level")
        self.width = w.FloatSlider(value=1.0 if windowed else 425, min=0.05 if windowed else 10, max=2 if windowed else 3000,
                                   step=0.01 if windowed else 5, description="width")
        self.opacity = w.FloatSlider(value=0.45, min=0, max=1, step=0.05, description="opacity")
        self.show = w.SelectMultiple(options=self.structures, value=self.structures, description="structures", rows=6)
        self.view.observe(self._resize, names="value")
        out = w.interactive_output(self._draw, dict(view=self.view, index=self.index, level=self.level, width=self.width,
                                                    opacity=self.opacity, show=self.show))
        self.widget = w.HBox([w.VBox([self.view, self.index, self.level, self.width, self.opacity, self.show]), out])

    def _resize(self, change):
        axis = {"axial": 2, "coronal": 1, "sagittal": 0}[change["new"]]
        self.index.max = self.image.shape[axis] - 1
        self.index.value = self.image.shape[axis] // 2

    def _draw(self, view, index, level, width, opacity, show):
        legend = self.label is not None and bool(self.structures)
        # the legend in an axis of its own beside the image: never over the CT, every name whole
        fig, axes = plt.subplots(1, 2 if legend else 1, figsize=(7.4 if legend else 5, 5), squeeze=False,
                                 gridspec_kw={"width_ratios": [5, 2.4] if legend else [1]})
        draw_slice(axes[0, 0], self.image, self.label, self.structures, view, min(index, self.index.max), self.spacing,
                   (level - width / 2, level + width / 2), opacity, show)
        if legend:
            structure_legend(axes[0, 1], self.structures, self.label)
        plt.show()


def show(image, label=None, structures=(), spacing=(1, 1, 1), title=None):
    """Interactive viewer in a live notebook; static three-view figure anywhere else."""
    if _has_frontend():
        from IPython.display import display
        try:
            display(SliceViewer(image, label, structures, spacing).widget)
            return None
        except ImportError:
            pass
    fig = overlay_figure(image, label, structures, spacing, title)
    plt.show()
    return fig


def niivue_layers(image, label=None, structures=(), spacing=(1, 1, 1), truth=None, window=None, affine=None) -> list[dict]:
    """The layers of :func:`show3d` as keyword arguments of ``ipyniivue.Volume``: the CT in a named
    CT window, then ``label`` in the course's colours (:func:`structure_color`) and names, then
    ``truth`` in the truth colour (:data:`TRUTH_OUTLINE`) when given. Each layer is a gzipped NIfTI
    in memory with the affine diag(``spacing``) (arrays are (X, Y, Z) in RAS, spacing in mm) or
    ``affine``, so the viewer needs no file and no network. A label layer's ``colormap_label`` is the dict that
    ``Volume.set_colormap_label`` takes (value ``i`` is ``structures[i - 1]``; 0 transparent).

    Args:
        image: (X, Y, Z) CT in HU or windowed to [0, 1].
        label: (X, Y, Z) integer map (a prediction when ``truth`` is given).
        truth: (X, Y, Z) integer map of the same structures, drawn as a second label layer.
        window: as in :func:`draw_slice`.
        affine: the arrays' 4x4 voxel-to-world matrix (a NIfTI file's ``affine``: any orientation);
            default diag(``spacing``).
    """
    import gzip

    import nibabel as nib

    image = _array(image).astype(np.float32)
    (low, high), _ = _window_range(window or default_window(structures), image.max() <= 1.0)
    affine = np.diag([*map(float, spacing), 1.0]) if affine is None else np.asarray(affine, float)

    def nifti(array):   # gzip level 1: a 100^3 CT travels to the browser in a fraction of its size, fast
        return gzip.compress(nib.Nifti1Image(array, affine).to_bytes(), compresslevel=1)

    hu = image.max() > 1.0   # HU fit int16 (half the bytes of float32); a windowed image keeps its floats
    layers = [{"name": "ct.nii.gz", "data": nifti(np.round(image).astype(np.int16) if hu else image),
               "colormap": "gray", "cal_min": float(low), "cal_max": float(high), "opacity": 1.0}]
    for name, volume, colours, opacity in (("labels", label, [structure_color(s) for s in structures], 0.5),
                                           ("truth", truth, [TRUTH_OUTLINE] * len(structures), 0.35)):
        if volume is None:
            continue
        volume = _array(volume).astype(np.uint8)
        if volume.shape != image.shape:
            raise ValueError(f"{name} has shape {volume.shape} but the image has {image.shape}; they must share one voxel grid")
        rgb = [(0, 0, 0)] + [tuple(round(255 * c) for c in to_rgb(colour)) for colour in colours]
        suffix = "" if truth is None else f" ({'prediction' if name == 'labels' else 'truth'})"
        layers.append({"name": f"{name}.nii.gz", "data": nifti(volume), "opacity": opacity,
                       "colormap_label": {"R": [c[0] for c in rgb], "G": [c[1] for c in rgb], "B": [c[2] for c in rgb],
                                          "A": [0] + [255] * len(structures), "I": list(range(len(rgb))),
                                          "labels": ["background"] + [f"{s}{suffix}" for s in structures]}})
    return layers


def show3d(image, label=None, structures=(), spacing=(1, 1, 1), truth=None, window=None, affine=None, height=480):
    """3-D viewer in a live notebook (JupyterLab 4, Notebook 7, VS Code, Colab): axial, coronal and
    sagittal slices and a volume rendering (drag to rotate), CT in the course's window, labels in
    the course's colours, radiological convention (the patient's right on the screen's left).
    With ``truth``, ``label`` is a prediction and both are label layers: the prediction in the
    structures' colours, the truth in yellow over it (set ``viewer.volumes[2].opacity = 0`` to hide it).
    Arguments as in :func:`niivue_layers`; ``height`` in pixels.

    It uses ipyniivue, an anywidget whose JavaScript ships in its wheel: no server extension and no
    network. A legend beside it (:func:`legend_html`) names the structures. Without a notebook
    frontend (a script, papermill, nbval, ``FSEFT_HEADLESS=1``) it draws nothing, says so in one
    line and returns None, so headless runs never wait for a browser.

    Returns:
        the ``ipyniivue.NiiVue`` widget, or None where no frontend can draw it.
    """
    layers = niivue_layers(image, label, structures, spacing, truth, window, affine)
    if not _has_frontend():
        print("show3d: no notebook frontend (script or headless run): the 3-D view appears when this cell runs in a notebook")
        return None
    try:
        from ipyniivue import NiiVue, ShowRender, SliceType, Volume
    except ImportError:
        print("show3d: the 3-D viewer needs ipyniivue (`pip install ipyniivue`, a dependency of fseft_lab)")
        return None
    import ipywidgets as w
    from IPython.display import display

    # the course's convention in every panel: patient's right on the screen's left, anterior on the left in sagittal views
    viewer = NiiVue(height=height, slice_type=SliceType.MULTIPLANAR, multiplanar_show_render=ShowRender.ALWAYS,
                    is_radiological_convention=True, sagittal_nose_left=True, is_colorbar=False, back_color=(0, 0, 0, 1))
    volumes = []
    for layer in layers:
        colours = layer.pop("colormap_label", None)
        volumes.append(Volume(**layer))
        if colours:
            volumes[-1].set_colormap_label(colours)
    viewer.load_volumes(volumes)
    viewer.layout = w.Layout(flex="1 1 auto", min_width="0")
    legend = w.HTML(legend_html(structures, label, truth is not None))
    legend.add_class("fseft-legend")
    display(w.HBox([viewer, legend], layout=w.Layout(width="100%", align_items="center")))
    return viewer


def legend_html(structures, label=None, truth_layer=False) -> str:
    """The legend beside :func:`show3d`'s viewer as HTML: a swatch in each structure's colour and its
    whole name (only structures present in ``label`` when given), and the truth's colour when
    ``truth_layer``: niivue draws no legend for label volumes."""
    present = None if label is None else set(np.unique(_array(label)).tolist())
    rows = [(structure_color(s), s + (" (prediction)" if truth_layer else ""))
            for i, s in enumerate(structures, 1) if present is None or i in present]
    rows += [(TRUTH_OUTLINE, "truth")] if truth_layer else []
    swatch = '<span style="display:inline-block;width:12px;height:12px;margin-right:6px;background:{}"></span>'
    return "".join(f'<div style="white-space:nowrap;font-size:12px">{swatch.format(to_hex(c))}{name}</div>' for c, name in rows)


def plot_learning_curves(curves: dict, ax=None):
    """Training Dice loss per epoch for several runs (``{label: Adapted.curve}``), validation
    Dice on a second axis where it was measured."""
    ax = ax or plt.subplots(figsize=(5.5, 3.2))[1]
    twin = None
    for i, (label, curve) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(curve["epoch"] + 1, curve["dice_loss"], color=color, label=label)
        if "val_dice" in curve and curve["val_dice"].notna().any():
            twin = twin or ax.twinx()
            seen = curve.dropna(subset=["val_dice"])
            twin.plot(seen["epoch"] + 1, seen["val_dice"], "o--", color=color, ms=3)
            twin.set_ylabel("validation Dice (dashed)")
    ax.set(xlabel="epoch", ylabel="training Dice loss")
    ax.legend(fontsize=8, frameon=False)
    return ax


def plot_dice_vs_k(table, ax=None):
    """Mean test Dice (over cases, structures and seeds) against the number of shots, per method."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    per_seed = table.groupby(["method", "k", "seed"]).dice.mean().groupby(["method", "k"])
    stats = per_seed.agg(["mean", "std"]).reset_index()
    for method, rows in stats.groupby("method", sort=False):
        ax.errorbar(rows["k"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", capsize=3, label=method)
    ax.set(xlabel="k (labelled volumes)", ylabel="Dice", xscale="log")
    ax.set_xticks(sorted(stats["k"].unique()), [str(k) for k in sorted(stats["k"].unique())])
    ax.legend(fontsize=8, frameon=False)
    return ax


def plot_params_vs_dice(table, ax=None):
    """Trainable parameters (log scale) against mean test Dice, one point per method: fewer
    parameters for the same Dice is better (up and to the left)."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    stats = table.groupby("method", sort=False).agg(dice=("dice", "mean"), params=("trainable_params", "first"))
    for i, (method, row) in enumerate(stats.iterrows()):
        ax.scatter(max(row["params"], 1), row["dice"], color=f"C{i}", label=method)
    ax.set(xscale="log", xlabel="trainable parameters (0 drawn at 1)", ylabel="Dice")
    ax.legend(fontsize=8, frameon=False)
    return ax


def compare_figure(image, truth, predictions: dict, structure: str, view="axial", spacing=(1, 1, 1), size=3.4):
    """One slice through the structure's centre: the truth, then each prediction with its Dice and
    the truth's outline drawn over it.

    ``truth`` and each prediction are (X, Y, Z) 0/1 masks of one structure.
    """
    truth = _array(truth).astype(bool)
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
    index = int(np.argwhere(truth)[:, axis].mean()) if truth.any() else None
    panels = {"truth": truth, **{name: _array(m).astype(bool) for name, m in predictions.items()}}
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size))
    for ax, (name, mask) in zip(np.atleast_1d(axes), panels.items()):
        index = draw_slice(ax, image, mask.astype(np.uint8), (structure,), view, index=index, spacing=spacing, opacity=0.7)
        if name != "truth":
            outline = _slice(truth.astype(float), view, index)
            if outline.any():
                ax.contour(outline, levels=[0.5], colors=TRUTH_OUTLINE, linewidths=0.8)
            dice = 2 * (mask & truth).sum() / max(1, mask.sum() + truth.sum())
            ax.set_title(f"{name}, Dice {dice:.2f}\n{ax.get_title()}", fontsize=8)
    structure_legend(fig, (structure,), truth_outline=len(panels) > 1, loc="lower center", ncol=2)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_query_sizes(curves: dict, structure: str, margin: float = 0.3, ax=None):
    """Predicted size of ``structure`` on the query volumes per epoch, relative to the support's
    size prior, for several runs (``{label: Adapted.curve}`` of transductive runs); the allowed
    band [1 - g, 1 + g] is shaded."""
    ax = ax or plt.subplots(figsize=(5.5, 3.2))[1]
    ax.axhspan(1 - margin, 1 + margin, color="0.9", label=f"prior band (g = {margin})")
    ax.axhline(1.0, color="0.6", lw=0.8)
    for i, (label, curve) in enumerate(curves.items()):
        prior, logged = curve.attrs["size_prior"][structure], curve.dropna(subset=[f"query_size/{structure}"])
        ax.plot(logged["epoch"], logged[f"query_size/{structure}"] / prior, color=f"C{i}", marker=".", label=label)
    ax.set(xlabel="epoch", ylabel="predicted size / prior", title=structure)
    ax.legend(fontsize=8, frameon=False)
    return ax
