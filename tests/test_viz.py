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
