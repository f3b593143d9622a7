"""Figures: named CT windows, orientation markers and legends on every overlay."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fseft_lab import viz  # noqa: E402


def _volume():
    image = np.full((20, 20, 10), 40.0)
    label = np.zeros((20, 20, 10), np.uint8)
    label[4:10, 4:10, 2:8] = 1
    return image, label


@pytest.mark.parametrize("structures, window, title", [(("liver",), None, "abdominal W400/L40"),
                                                       (("lung_upper_lobe_left",), None, "lung W1500/L-600"),
                                                       (("liver",), (-100, 300), "W400/L100")])
def test_a_slice_names_its_window_and_shows_the_patients_right_on_the_left(structures, window, title):
    image, label = _volume()
    fig, ax = plt.subplots()
    viz.draw_slice(ax, image, label, structures, "axial", window=window)
    assert ax.get_title().endswith(title)
    assert [(t.get_text(), t.get_position()[0] < 0.5) for t in ax.texts] == [("R", True), ("L", False)]
    plt.close(fig)


def test_an_unknown_window_names_the_choices():
    image, label = _volume()
    with pytest.raises(ValueError, match="unknown window 'bone'.*abdominal"):
        viz.draw_slice(plt.subplots()[1], image, label, ("liver",), window="bone")


def test_overlay_legend_names_the_structures_present():
    image, label = _volume()
    fig = viz.overlay_figure(image, label, ("liver", "spleen"))
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["liver"]   # the spleen is not in the label
    plt.close(fig)


def test_compare_figure_outlines_the_truth_and_says_so_in_its_legend():
    image, label = _volume()
    truth = label == 1
    fig = viz.compare_figure(image, truth, {"lora": np.roll(truth, 2, axis=0)}, "liver")
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["liver (prediction)", "truth (outline)"]
    assert fig.axes[1].get_title().startswith("lora, Dice 0.67")
    assert fig.axes[1].collections and not fig.axes[0].collections   # the outline only over predictions
    plt.close(fig)


def test_the_slice_viewers_legend_sits_beside_the_image_with_every_name_whole(monkeypatch):
    names = ("heart_myocardium", "lung_upper_lobe_right", "gluteus_maximus_left", "portal_vein_and_splenic_vein",
             "adrenal_gland_right", "urinary_bladder", "kidney_left", "liver")
    image = np.full((30, 30, 20), 40.0)
    label = np.zeros((30, 30, 20), np.uint8)
    for i in range(len(names)):
        label[2 + 3 * i:4 + 3 * i, 5:25, 5:15] = i + 1
    monkeypatch.setattr(plt, "show", lambda: None)
    for view in viz.VIEWS:
        viz.SliceViewer(image, label, names)._draw(view, 10, 40, 400, 0.45, names)
        fig = plt.gcf()
        renderer = fig.canvas.get_renderer()
        image_box = fig.axes[0].get_window_extent(renderer)
        [legend] = [a.get_legend() for a in fig.axes if a.get_legend()]
        assert [t.get_text() for t in legend.get_texts()] == list(names)
        assert legend.get_window_extent(renderer).x0 >= image_box.x1           # beside the image, not over it
        for text in legend.get_texts():                                       # and no name cut by the figure's edge
            box = text.get_window_extent(renderer)
            assert 0 <= box.x0 and box.x1 <= fig.bbox.x1, text.get_text()
        plt.close(fig)
