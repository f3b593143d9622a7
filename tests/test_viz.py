"""Figures: named CT windows, orientation markers and legends on every overlay."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fseft_lab import viz  # noqa: E402
from fseft_lab.anatomy import ALL_STRUCTURES  # noqa: E402


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


def test_every_structure_has_its_own_colour_and_none_is_a_grey_that_vanishes_over_the_ct():
    colours = [viz.structure_color(name)[:3] for name in ALL_STRUCTURES]
    assert not [name for name, c in zip(ALL_STRUCTURES, colours) if len(set(c)) == 1]   # tab20 greys the bladder
    assert len(set(colours)) == min(len(ALL_STRUCTURES), 38)


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


def _decode(layer):
    import gzip

    import nibabel as nib
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress(layer["data"]))
    return np.asarray(nifti.dataobj), nifti.affine


def test_the_3d_viewers_layers_carry_the_volumes_the_window_and_the_courses_colours_and_names():
    image, label = _volume()
    image[0, 0, 0] = -1000.0                                # HU (not a windowed image)
    ct, labels = viz.niivue_layers(image, label, ("liver", "spleen"), spacing=(3, 2, 1.5))
    array, affine = _decode(ct)
    assert np.array_equal(array, image) and np.allclose(affine, np.diag([3, 2, 1.5, 1]))   # RAS, millimetres
    assert (ct["cal_min"], ct["cal_max"]) == (-160, 240)   # the abdominal window, W400/L40
    assert np.array_equal(_decode(labels)[0], label)
    lut = labels["colormap_label"]
    assert lut["labels"] == ["background", "liver", "spleen"] and lut["A"] == [0, 255, 255]
    for i, name in enumerate(("liver", "spleen"), 1):
        assert [lut[c][i] for c in "RGB"] == [round(255 * v) for v in viz.structure_color(name)[:3]]
    lps = np.diag([-3.0, -2.0, 1.5, 1.0])                  # a scan stored in another orientation keeps its affine
    assert np.allclose(_decode(viz.niivue_layers(image, affine=lps)[0])[1], lps)


def test_the_3d_viewers_prediction_against_truth_is_two_label_layers_the_truth_in_its_own_colour():
    image, truth = _volume()
    prediction = np.roll(truth, 2, axis=0)
    _, predicted, true = viz.niivue_layers(image / image.max(), prediction, ("liver",), truth=truth)
    assert predicted["colormap_label"]["labels"] == ["background", "liver (prediction)"]
    assert [true["colormap_label"][c][1] for c in "RGB"] == [255, 255, 0]   # TRUTH_OUTLINE, yellow
    assert np.array_equal(_decode(predicted)[0], prediction) and np.array_equal(_decode(true)[0], truth)
    with pytest.raises(ValueError, match=r"truth has shape \(20, 20, 5\) but the image has \(20, 20, 10\)"):
        viz.niivue_layers(image, prediction, ("liver",), truth=truth[..., :5])


def test_show3d_draws_nothing_headless_and_says_so(capsys):
    image, label = _volume()
    assert viz.show3d(image, label, ("liver",)) is None      # conftest sets FSEFT_HEADLESS
    assert "no notebook frontend" in capsys.readouterr().out


def test_show3d_in_a_notebook_uses_the_radiological_convention_and_a_legend_beside_it(monkeypatch):
    pytest.importorskip("ipyniivue")
    shown = []
    monkeypatch.setattr(viz, "_has_frontend", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown.append)
    image, label = _volume()
    viewer = viz.show3d(image, np.roll(label, 2, axis=0), ("liver", "spleen"), truth=label)
    assert viewer.opts.is_radiological_convention and viewer.opts.sagittal_nose_left   # R and A on the screen's left
    assert [v.name for v in viewer.volumes] == ["ct.nii.gz", "labels.nii.gz", "truth.nii.gz"]
    assert viewer.volumes[1].colormap_label.labels == ["background", "liver (prediction)", "spleen (prediction)"]
    [box] = shown
    assert box.children[0] is viewer and "liver (prediction)" in box.children[1].value and "spleen" not in box.children[1].value
