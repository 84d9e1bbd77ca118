"""File names a job spec chooses: ModelCheckpoint's ``filepath``, CSVLogger's ``filename``.

A name is one file inside its callback's folder: letters, digits and ``_-.=``, no
leading ``.`` and no ``..``, with ``str.format`` placeholders that are plain names
with a small numeric format (``epoch{epoch:02d}-{val_loss:.3f}.keras``). Which
placeholder names Keras fills in depends on the compiled metrics, which
``checks.validation`` knows.
"""

from __future__ import annotations

import re
import string

SAFE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-.=")
SMALL_FORMAT = re.compile(r"0?(\d{0,2})(\.(\d{1,2}))?([dfegFEG])?")
MAX_FORMAT_WIDTH = 32
# fitq's own names in a job's folder, where no name a spec chooses can land: the
# trained model (``model.save()``) and its SavedModel (``model.export()``), and the
# folders of checkpoints and of the backups a resumed attempt starts from.
FINAL_MODEL_FILE = "model.keras"
EXPORT_DIR = "export"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
LOG_FILE = "train.log"  # what Keras prints, as the API's /logs and /events serve it
TENSORBOARD_DIR = "tensorboard"  # the TensorBoard callback's log_dir
CSV_DIR = "csv"  # where CSVLogger's files go


def placeholders(name: str) -> list[str]:
    """The placeholder names in ``name``, in order.

    Raises:
        ValueError: The name holds a character outside ``SAFE_NAME_CHARS``, or a
            placeholder that is not a plain name with a small numeric format.
    """
    names = []
    for literal, field, spec, conversion in string.Formatter().parse(name):
        if not set(literal) <= SAFE_NAME_CHARS:
            bad = sorted(set(literal) - SAFE_NAME_CHARS)
            raise ValueError(f"contains {bad}; expected letters, digits, '_', '-', '.', '='")
        if field is None:
            continue
        if conversion or not field.isidentifier():
            raise ValueError(
                f"placeholder {{{field}}} is not a plain name (no attribute, index or conversion)"
            )
        if spec and not _small_format(spec):
            raise ValueError(
                f"format {spec!r} of {{{field}}} is not a small numeric format "
                "such as '02d' or '.3f'"
            )
        names.append(field)
    return names


def _small_format(spec: str) -> bool:
    match = SMALL_FORMAT.fullmatch(spec)
    return match is not None and int(match.group(1) or 0) <= MAX_FORMAT_WIDTH


def name_problems(name: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with ``name`` as a file name ending in one of ``suffixes``.

    A name whose placeholders cannot be read gets that one problem only.
    """
    try:
        placeholders(name)
    except ValueError as exc:
        return [f"received {name!r}: {exc}"]
    problems = []
    if name.startswith(".") or ".." in name:
        problems.append(
            f"received {name!r}; expected a file name inside the job's folder "
            "(no leading '.', no '..')"
        )
    if suffixes and not name.endswith(suffixes):
        problems.append(f"received {name!r}; expected a name ending in {' or '.join(suffixes)}")
    return problems


# The architecture a job trained (``model.to_json()`` before ``compile()``), in its
# artifact folder: what a warm start from the job builds.
ARCHITECTURE_FILE = "model.json"
