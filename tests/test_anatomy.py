"""Structure names and label templates (fseft_lab.anatomy)."""
import pytest

from fseft_lab.anatomy import (
    ALL_STRUCTURES,
    BASE_ORGANS,
    COMPOSITES,
    DATASET_TEMPLATES,
    NOVEL_GROUPS,
    NOVEL_STRUCTURES,
    ONE_PIECE,
    UNIVERSAL_TEMPLATE,
    UNSIDED,
    check_structure,
    dataset_template,
    is_novel,
    is_one_piece,
    template_index,
)


def test_universal_template_has_29_unique_names_in_paper_order():
    assert len(UNIVERSAL_TEMPLATE) == 29
    assert len(set(UNIVERSAL_TEMPLATE)) == 29
    assert UNIVERSAL_TEMPLATE[0] == "spleen"
    assert UNIVERSAL_TEMPLATE[-1] == "colon_tumor"
    assert template_index("liver") == 5
    assert template_index("spleen") == 0
    assert template_index("colon_tumor") == 28
    # channel i is UNIVERSAL_TEMPLATE[i] for every structure
    assert [template_index(s) for s in UNIVERSAL_TEMPLATE] == list(range(29))


def test_template_index_rejects_novel_and_unknown_names():
    with pytest.raises(ValueError, match="heart_myocardium"):
        template_index("heart_myocardium")  # known, but not a channel of the universal head
    with pytest.raises(ValueError, match="livr"):
        template_index("livr")


def test_base_organs_are_template_structures():
    assert len(BASE_ORGANS) == 9
    assert set(BASE_ORGANS) <= set(UNIVERSAL_TEMPLATE)


def test_novel_structures_are_16_and_disjoint_from_the_template():
    assert len(NOVEL_STRUCTURES) == 16
    assert len(set(NOVEL_STRUCTURES)) == 16
    assert not set(NOVEL_STRUCTURES) & set(UNIVERSAL_TEMPLATE)
    assert sum(len(g) for g in NOVEL_GROUPS.values()) == 16
    assert set(ALL_STRUCTURES) == set(UNIVERSAL_TEMPLATE) | set(NOVEL_STRUCTURES)
    assert all(is_novel(s) for s in NOVEL_STRUCTURES)
    assert not any(is_novel(s) for s in UNIVERSAL_TEMPLATE)


@pytest.mark.parametrize("bad", ["livers", "kidney", "Liver", "", "heart"])
def test_check_structure_raises_naming_the_bad_name(bad):
    with pytest.raises(ValueError) as err:
        check_structure(bad)
    assert repr(bad) in str(err.value)


def test_check_structure_returns_known_names_and_suggests_close_ones():
    assert check_structure("liver") == "liver"
    assert check_structure("gluteus_medius_left") == "gluteus_medius_left"
    with pytest.raises(ValueError, match="kidney_right"):
        check_structure("kidney_middle")  # suggestions share the first word
    with pytest.raises(ValueError):
        check_structure("liver", allowed=NOVEL_STRUCTURES)


def test_dataset_template_known_and_unknown():
    assert dataset_template("flare22")[1] == "liver"
    assert dataset_template("flare22")[13] == "kidney_left"
    assert dataset_template("btcv")[6] == "liver"
    with pytest.raises(ValueError, match="'nosuchdata'"):
        dataset_template("nosuchdata")


@pytest.mark.parametrize("dataset", sorted(DATASET_TEMPLATES))
def test_dataset_template_values_are_known_structures_or_unsided(dataset):
    template = DATASET_TEMPLATES[dataset]
    assert 0 not in template, "0 is background, never a structure"
    assert all(isinstance(v, int) and v > 0 for v in template)
    for name in template.values():
        assert name in ALL_STRUCTURES or name in UNSIDED, f"{dataset}: {name!r}"
    assert len(set(template.values())) == len(template), f"{dataset} names a structure twice"


def test_unsided_and_composites_point_at_template_structures():
    for right, left in UNSIDED.values():
        assert right in UNIVERSAL_TEMPLATE and left in UNIVERSAL_TEMPLATE
        assert right.endswith("_right") and left.endswith("_left")
    for composite, parts in COMPOSITES.items():
        assert composite in UNIVERSAL_TEMPLATE
        assert set(parts) <= set(NOVEL_STRUCTURES)



@pytest.mark.parametrize("name", ["liver", "spleen", "kidney_left", "pancreas", "stomach", "esophagus", "lung_right",
                                  "heart_myocardium", "lung_middle_lobe_right"])
def test_organs_are_one_piece(name):
    assert is_one_piece(name)


@pytest.mark.parametrize("name", [
    "liver_tumor", "kidney_tumor", "kidney_cyst", "lung_tumor", "pancreas_tumor", "hepatic_vessel_tumor", "colon_tumor",
    "bone", "hepatic_vessel", "aorta", "portal_vein_and_splenic_vein", "duodenum",   # lesions, skeleton, curved vessels, bowel
    "gluteus_maximus_left",                      # a muscle the field of view cuts
    "lung", "kidney",                            # both sides in one mask
    "background", "colon", "rib_left_1",         # names the list does not hold are never cut
])
def test_structures_that_may_be_several_pieces_are_never_cut(name):
    assert not is_one_piece(name)


def test_one_piece_names_are_known_structures():
    assert ONE_PIECE - {"heart"} <= set(ALL_STRUCTURES)  # and TotalSegmentator v2's whole heart
    assert set(BASE_ORGANS) - ONE_PIECE == {"duodenum", "aorta"}
