"""`cnnpipe registry list|show|promote|pin|unpin`: read the model registry and move its pointers by hand.

A version is named ``<dataset>/<lineage>/<model>/<run id>`` and a test set's lineage
``<dataset>/<lineage>``, as `cnnpipe registry list` prints them; the rules the pointers follow
are components/registry.py's (docs/storage.md).
"""

from __future__ import annotations

import argparse
import json

from components.formatting import format_percent


def add_registry_commands(commands) -> None:
    registry = commands.add_parser(
        "registry",
        help="list versions and champions of a model registry; promote, pin or unpin a version by hand",
        description="The model registry that `cnnpipe run --registry` publishes to (a directory or gs://...).",
    )
    actions = registry.add_subparsers(dest="registry_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every test set (lineage): its champions and versions")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(handler=command_list)
    show = actions.add_parser("show", help="a version's figures and records, or a lineage's, as JSON")
    show.add_argument("reference", help="<dataset>/<lineage>/<model>/<run id>, or <dataset>/<lineage>")
    show.set_defaults(handler=command_show)
    for name, handler, what in (
        ("promote", command_promote, "make a version its architecture's and its task's champion, without a test"),
        ("pin", command_pin, "make a version champion and pin it: runs leave it alone until `unpin`"),
        ("unpin", command_unpin, "let runs replace a pinned version again (on a significant win)"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("reference", help="<dataset>/<lineage>/<model>/<run id> (see `cnnpipe registry list`)")
        if name != "unpin":
            action.add_argument("--note", default="", help="why, recorded in the pointer (e.g. 'rollback: bad labels')")
        action.set_defaults(handler=handler)
    for action in actions.choices.values():
        action.add_argument("--registry", required=True, help="registry root: a directory or gs://bucket/prefix")


def command_list(args: argparse.Namespace) -> int:
    from components import registry

    lineages = registry.list_registry(args.registry)
    if args.json:
        print(json.dumps(lineages, indent=2))
        return 0
    if not lineages:
        print(f"no published models in {args.registry}")
    for entry in lineages:
        print("\n".join(describe_lineage(entry)))
    return 0


def describe_lineage(entry: dict) -> list[str]:
    """A lineage as text: its test set, the task champion, and each architecture's versions."""
    test_set = entry["lineage"]
    classes = test_set["class_names"]
    shown_classes = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
    lines = [
        f"{entry['reference']}: {test_set['test_images']:,} test images, {len(classes)} classes ({shown_classes}), "
        f"test identity {test_set['test_identity'][:16]}",
        f"  task champion (serving): {describe_pointer(entry['champion'])}",
    ]
    for model, listing in entry["models"].items():
        champion = listing["champion"]
        lines.append(f"  {model}: champion {describe_pointer(champion)}")
        for version in listing["versions"]:
            mark = "  <- champion" if champion and champion["run_id"] == version["run_id"] else ""
            lines.append(f"    {version['reference']}  {format_percent(version['test_accuracy'])}  {version['completed_at']}{mark}")
    return lines


def describe_pointer(pointer: dict | None) -> str:
    if pointer is None:
        return "none"
    text = f"{pointer['model']}/{pointer['run_id']} ({format_percent(pointer['test_accuracy'])}, {pointer['how']})"
    if pointer.get("pinned"):
        note = pointer["pinned"].get("note")
        text += f", pinned since {pointer['pinned']['at']}" + (f": {note}" if note else "")
    return text


def command_show(args: argparse.Namespace) -> int:
    from components import registry

    print(json.dumps(registry.show(args.registry, args.reference), indent=2))
    return 0


def command_promote(args: argparse.Namespace) -> int:
    return _move_by_hand(args, pin=False)


def command_pin(args: argparse.Namespace) -> int:
    return _move_by_hand(args, pin=True)


def _move_by_hand(args: argparse.Namespace, pin: bool) -> int:
    from components import registry

    moved = registry.promote_by_hand(args.registry, args.reference, pin=pin, note=args.note)
    print(f"{'pinned' if pin else 'promoted'} {args.reference}: " + ", ".join(moved["pointers"]))
    return 0


def command_unpin(args: argparse.Namespace) -> int:
    from components import registry

    changed = registry.unpin(args.registry, args.reference)
    print(f"unpinned {args.reference}: " + ", ".join(changed))
    return 0
