"""Structure names, the universal template and the label templates of each dataset.

The foundation model has one sigmoid output channel per structure of the **universal template**:
the 29 structures of the source paper (Silva-Rodriguez et al., MedIA 2025, after the CLIP-Driven
Universal Model), in the paper's order, so that channel ``i`` is ``UNIVERSAL_TEMPLATE[i]``.
Names follow TotalSegmentator's snake_case file names wherever TotalSegmentator has the structure.

**Novel structures** (heart chambers, lung lobes, gluteal muscles) are never labelled in
pre-training; they are what the course adapts the model to in notebook 07.

A **dataset template** maps the integer values of one dataset's label maps to structure names
(e.g. FLARE22: 1 = liver, 2 = right kidney, ...). Reading any dataset through its template turns
its labels into universal names, which is how partial labels are expressed (notebook 00).
"""
from __future__ import annotations

UNIVERSAL_TEMPLATE: tuple[str, ...] = (
    "spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus",
    "liver", "stomach", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein",
    "pancreas", "adrenal_gland_right", "adrenal_gland_left", "duodenum", "urinary_bladder",
    "prostate_or_uterus", "liver_tumor", "kidney_tumor", "kidney_cyst", "celiac_trunk",
    "lung_right", "lung_left", "bone", "brain", "lung_tumor",
    "pancreas_tumor", "hepatic_vessel", "hepatic_vessel_tumor", "colon_tumor",
)

#: The nine organs of the paper's TotalSegmentator and FLARE22 base-organ tasks.
BASE_ORGANS: tuple[str, ...] = (
    "spleen", "kidney_left", "gallbladder", "esophagus", "liver",
    "pancreas", "stomach", "duodenum", "aorta",
)

NOVEL_GROUPS: dict[str, tuple[str, ...]] = {
    "heart": ("heart_myocardium", "heart_atrium_left", "heart_ventricle_left",
              "heart_atrium_right", "heart_ventricle_right"),
    "lung_lobes": ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
                   "lung_middle_lobe_right", "lung_lower_lobe_right"),
    "gluteus": ("gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left",
                "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right"),
}
NOVEL_STRUCTURES: tuple[str, ...] = tuple(s for group in NOVEL_GROUPS.values() for s in group)

#: Template structures that are unions of finer structures the phantom draws.
COMPOSITES: dict[str, tuple[str, ...]] = {
    "lung_right": ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
    "lung_left": ("lung_upper_lobe_left", "lung_lower_lobe_left"),
}

ALL_STRUCTURES: tuple[str, ...] = UNIVERSAL_TEMPLATE + NOVEL_STRUCTURES

#: Structures that are one connected piece in any CT that shows them, whatever slab of the body
#: the scan covers: solid organs, each lung and lobe, the heart and its parts, and two straight tubes
#: (oesophagus, inferior vena cava) that a field of view can shorten but not split. Evaluation
#: keeps only their largest connected component, which removes a prediction's stray islands.
#: Every other structure may lawfully be several pieces and is never cut to one: lesions (any
#: number of them), the skeleton, vessel trees and curved tubes that leave and re-enter a scan's
#: slab (the aorta at its arch, the portal and splenic veins, the duodenum's loop), muscles that a
#: field of view cuts (the glutei), a structure of both sides (``lung``, ``kidney``), and any name
#: this list does not hold.
ONE_PIECE: frozenset[str] = frozenset({
    "spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus", "liver", "stomach",
    "inferior_vena_cava", "pancreas", "adrenal_gland_right", "adrenal_gland_left", "urinary_bladder",
    "prostate_or_uterus", "lung_right", "lung_left", "brain",
    *NOVEL_GROUPS["heart"], *NOVEL_GROUPS["lung_lobes"],
    "heart",  # TotalSegmentator v2's whole heart (heart.nii.gz), which replaced v1's chambers
})

#: Label templates of the real datasets (value -> structure), as their documentation gives them.
#: ``kidney`` without a side is split at the image centre on loading, as the paper does.
DATASET_TEMPLATES: dict[str, dict[int, str]] = {
    "btcv": {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "esophagus",
             6: "liver", 7: "stomach", 8: "aorta", 9: "inferior_vena_cava",
             10: "portal_vein_and_splenic_vein", 11: "pancreas", 12: "adrenal_gland_right",
             13: "adrenal_gland_left"},
    "flare22": {1: "liver", 2: "kidney_right", 3: "spleen", 4: "pancreas", 5: "aorta",
                6: "inferior_vena_cava", 7: "adrenal_gland_right", 8: "adrenal_gland_left",
                9: "gallbladder", 10: "esophagus", 11: "stomach", 12: "duodenum",
                13: "kidney_left"},
    "amos": {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "esophagus",
             6: "liver", 7: "stomach", 8: "aorta", 9: "inferior_vena_cava", 10: "pancreas",
             11: "adrenal_gland_right", 12: "adrenal_gland_left", 13: "duodenum",
             14: "urinary_bladder", 15: "prostate_or_uterus"},
    "lits": {1: "liver", 2: "liver_tumor"},
    "kits": {1: "kidney", 2: "kidney_tumor", 3: "kidney_cyst"},
    "ctorg": {1: "liver", 2: "urinary_bladder", 3: "lung", 4: "kidney", 5: "bone", 6: "brain"},
}

#: Names a dataset may use for a paired organ without a side: (right, left) in the template.
UNSIDED: dict[str, tuple[str, str]] = {
    "kidney": ("kidney_right", "kidney_left"),
    "lung": ("lung_right", "lung_left"),
}


def check_structure(name: str, allowed: tuple[str, ...] | None = ALL_STRUCTURES) -> str:
    """Return ``name`` if it is a known structure, else raise ``ValueError`` listing close names.
    ``allowed=None`` accepts any structure name a dataset may give (a snake_case word: ``colon``)."""
    if allowed is None:
        if not name.strip() or any(c in name for c in ",/\\"):
            raise ValueError(f"structure name {name!r} must be a word without ',' or '/', e.g. colon")
        return name
    if name in allowed:
        return name
    close = [s for s in allowed if name.split("_")[0] in s] or list(allowed)
    raise ValueError(f"unknown structure {name!r}; valid names include: {', '.join(close[:12])}"
                     + (" ..." if len(close) > 12 else ""))


def template_index(name: str) -> int:
    """Channel of ``name`` in the universal head, e.g. ``template_index('liver') == 5``."""
    return UNIVERSAL_TEMPLATE.index(check_structure(name, UNIVERSAL_TEMPLATE))


def is_novel(name: str) -> bool:
    """True for structures the foundation model never saw labelled: the heart chambers, lobes and
    glutei, and any name a dataset labels that the universal template lacks (``colon``)."""
    return name not in UNIVERSAL_TEMPLATE


#: Structures a scan can hold whole: the one-piece ones less the two straight tubes (oesophagus,
#: inferior vena cava) that nearly every field of view shortens. A support volume must show them
#: whole (:func:`fseft_lab.data.fewshot.support_ready`): a liver cut to a sliver at the scan's end
#: teaches "liver only at the edge", and its size is no prior for a whole one.
BOUNDED: frozenset[str] = ONE_PIECE - {"esophagus", "inferior_vena_cava"}


def is_one_piece(name: str) -> bool:
    """True if ``name`` is anatomically one connected piece (:data:`ONE_PIECE`), so that a
    prediction may be cut to its largest component: ``is_one_piece('liver')`` but not
    ``is_one_piece('liver_tumor')``."""
    return name in ONE_PIECE


def dataset_template(dataset: str) -> dict[int, str]:
    """Label template of a known dataset, e.g. ``dataset_template('flare22')[1] == 'liver'``."""
    if dataset not in DATASET_TEMPLATES:
        raise ValueError(f"unknown dataset template {dataset!r}; known: {sorted(DATASET_TEMPLATES)}")
    return DATASET_TEMPLATES[dataset]



#: Multi-structure tasks by name; any single structure name is a binary task of its own.
MULTICLASS_TASKS: dict[str, tuple[str, ...]] = {"base_organs": BASE_ORGANS, **NOVEL_GROUPS}


def task_structures(task: str, named: tuple[str, ...] | list[str] = ()) -> tuple[tuple[str, ...], bool]:
    """``(structures, multiclass)`` of a task: ``'liver'`` is binary (sigmoid), ``'base_organs'``
    the paper's FLARE22 9-organ softmax task, ``'heart'`` / ``'lung_lobes'`` / ``'gluteus'`` a
    softmax task over their novel structures, ``'liver,spleen'`` a softmax task over the names given.

    ``named``: the structures a dataset labels (its mask files, ``dataset.json`` labels or label
    map). Each of them is a valid single-structure task, also one the universal template lacks
    (``colon``: novel, a new head row), and a name the data gives wins over a group of the same
    name: in a TotalSegmentator v2 folder, whose ``heart.nii.gz`` is the whole heart, ``'heart'``
    is that one structure, not the v1 chambers.

    >>> task_structures("colon", named=("liver", "colon"))
    (('colon',), False)
    """
    if task == "all" and named:
        return tuple(named), len(named) > 1
    parts = [p.strip() for p in task.split(",") if p.strip()]
    if len(parts) > 1:
        structures = tuple(s for p in parts for s in task_structures(p, named)[0])
        if len(set(structures)) < len(structures):
            raise ValueError(f"task {task!r} names a structure twice")
        return structures, True
    if task in named:
        return (task,), False
    if task in MULTICLASS_TASKS:
        return MULTICLASS_TASKS[task], True
    if task in ALL_STRUCTURES:
        return (task,), False
    close = [s for s in (*named, *ALL_STRUCTURES) if task.split("_")[0] and task.split("_")[0] in s][:8]
    raise ValueError(f"unknown task {task!r}: a task is a structure the dataset labels"
                     + (f" (it labels {len(named)}, e.g. {', '.join(list(named)[:6])})" if named else "")
                     + f", a template structure (e.g. liver, heart_myocardium), one of {sorted(MULTICLASS_TASKS)}, "
                     "several names joined by commas, or all (every structure the dataset labels)"
                     + (f"; close names: {', '.join(close)}" if close else ""))
