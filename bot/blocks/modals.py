"""Pure builders of the bot's modals: overrides, Abort, Done with details and approving a deletion.

Every modal carries what it was opened for (run, step, round, fingerprint) in ``private_metadata``;
the vote is cast when it is submitted and checked against that under the step's row lock.
"""

from __future__ import annotations

from typing import Any

from bot.blocks.kit import escape, section
from bot.blocks.limits import INPUT_MAX, LABEL_MAX, MODAL_TITLE_MAX, OPTION_TEXT_MAX, PLACEHOLDER_MAX
from bot.blocks.step import delete_keep_block
from bot.runs.snapshot import RunView, StepView
from bot.slack_ids import BlockId, CallbackId, InputId, ModalRef

REASON_MAX = 2000
GROUPS_MAX = INPUT_MAX


def _plain(text: str, limit: int = MODAL_TITLE_MAX) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit]}


def _reason_input(label: str, placeholder: str) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": str(BlockId.REASON),
        "label": _plain(label, LABEL_MAX),
        "element": {
            "type": "plain_text_input",
            "action_id": str(InputId.REASON),
            "multiline": True,
            "max_length": REASON_MAX,
            "placeholder": _plain(placeholder, PLACEHOLDER_MAX),
        },
    }


def _modal(
    callback: CallbackId, title: str, submit: str, ref: ModalRef, blocks: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": str(callback),
        "title": _plain(title),
        "submit": _plain(submit),
        "close": _plain("Cancel"),
        "private_metadata": ref.encode(),
        "blocks": blocks,
    }


def modal_ref(view: RunView, sv: StepView, choice: str = "") -> ModalRef:
    return ModalRef(view.run.id, sv.step.id, sv.row.attempt, sv.row.fingerprint or "", choice)


def _deletion_notice(sv: StepView) -> list[dict[str, Any]]:
    if sv.step.risk != "destructive":
        return []
    return [
        section(delete_keep_block(sv)),
        section(
            f"🟥 *This is a deletion.* It counts under the delete rules: {sv.needed} different approvers, "
            "and not the person who started the run. (Menu options cannot be red; this one deletes.)"
        ),
    ]


def override_modal(view: RunView, sv: StepView, kind: str) -> dict[str, Any]:
    """Mark done (two approvers) or Skip (optional steps), with a required reason."""
    step = sv.step
    if kind == "skip":
        callback, title, submit = CallbackId.SKIP, f"Skip {step.id}", "Skip step"
        intro = f"Skip *{step.id}* · {escape(step.title)}. Say why it is not needed."
        label = "Why is it skipped?"
    else:
        callback, title, submit = CallbackId.MARK_DONE, f"Mark {step.id} done", "Mark done"
        have = len(sv.mark_done_votes)
        intro = (
            f"Mark *{step.id}* · {escape(step.title)} done without the bot: it was done by other means. "
            f"Two approvers must mark it done ({have} of 2 so far)."
        )
        label = "What was done instead, and by whom?"
    blocks = [section(intro), *_deletion_notice(sv), *_mark_done_choice(sv, kind), _reason_input(label, "required")]
    return _modal(callback, title, submit, modal_ref(view, sv), blocks)


# What Mark done asks on a step with ``mark_done_choices`` (B4: the row edited by hand, or not done at all).
CHOICE_LABELS = {  # choice -> (option text, its description), each within Slack's 75 characters
    "edited_by_hand": ("The row was edited by hand", "B4b (add the AccountServer in the Console) is not needed"),
    "not_done": ("It was not done", "B4b adds the AccountServer in the Console instead"),
}


def mark_done_choices(sv: StepView) -> list[str]:
    return [str(c) for c in (sv.step.params.get("mark_done_choices") or {})]


def _mark_done_choice(sv: StepView, kind: str) -> list[dict[str, Any]]:
    choices = mark_done_choices(sv) if kind != "skip" else []
    if not choices:
        return []
    options = []
    for choice in choices:
        text, description = CHOICE_LABELS.get(choice, (choice.replace("_", " ").capitalize(), ""))
        option: dict[str, Any] = {"text": _plain(text, OPTION_TEXT_MAX), "value": choice}
        if description:
            option["description"] = _plain(description, OPTION_TEXT_MAX)
        options.append(option)
    return [
        {
            "type": "input",
            "block_id": str(BlockId.CHOICE),
            "label": _plain("What happened to this step?", LABEL_MAX),
            "element": {"type": "radio_buttons", "action_id": str(InputId.CHOICE), "options": options},
        }
    ]


def abort_modal(view: RunView, sv: StepView) -> dict[str, Any]:
    blocks = [
        section(
            f"Abort *{view.run.id}*? Steps already done stay done; nothing more will run. "
            f"The current step is *{sv.step.id}* · {escape(sv.step.title)}."
        ),
        _reason_input("Why is the run aborted?", "required"),
    ]
    return _modal(CallbackId.ABORT, f"Abort {view.run.id}", "Abort run", modal_ref(view, sv), blocks)


def approve_delete_modal(view: RunView, sv: StepView) -> dict[str, Any]:
    """Approving a deletion: the whole DELETE/KEEP list, never clipped at a confirm dialog's 300 characters."""
    blocks = [
        section(
            f"Approve *{sv.step.id}* · {escape(sv.step.title)} ({len(sv.approvers)} of {sv.needed} approvals so far)."
        ),
        *_deletion_notice(sv),
    ]
    return _modal(CallbackId.APPROVE, f"Approve {sv.step.id}", "Approve delete", modal_ref(view, sv), blocks)


def done_modal(view: RunView, sv: StepView) -> dict[str, Any]:
    """Done that asks for what the person did: the deletion performed, or the list a step records (B25)."""
    step = sv.step
    blocks: list[dict[str, Any]] = [section(f"*{step.id}* · {escape(step.title)}")]
    if step.risk == "destructive":
        blocks += _deletion_notice(sv)
        blocks.append(section("Press *Yes, deleted* only if you deleted exactly this, and nothing else."))
        return _modal(CallbackId.DONE, f"Done: {step.id}", "Yes, deleted", modal_ref(view, sv), blocks)
    blocks += [
        {
            "type": "input",
            "block_id": str(BlockId.GROUPS),
            "optional": True,
            "label": _plain("Groups that were ALREADY disabled (one per line)", LABEL_MAX),
            "hint": _plain("They stay disabled at B36. Leave empty only if none were.", LABEL_MAX),
            "element": {
                "type": "plain_text_input",
                "action_id": str(InputId.GROUPS),
                "multiline": True,
                "max_length": GROUPS_MAX,
            },
        },
        {
            "type": "input",
            "block_id": str(BlockId.NONE_DISABLED),
            "optional": True,
            "label": _plain("Or", LABEL_MAX),
            "element": {
                "type": "checkboxes",
                "action_id": str(InputId.NONE_DISABLED),
                "options": [{"text": _plain("No Group was disabled before", OPTION_TEXT_MAX), "value": "none"}],
            },
        },
    ]
    return _modal(CallbackId.DONE, f"Done: {step.id}", "Done", modal_ref(view, sv), blocks)


def refusal_view(title: str, text: str) -> dict[str, Any]:
    """What a submitted modal turns into when the bot refuses it: the reason, and a Close button."""
    return {"type": "modal", "title": _plain(title), "close": _plain("Close"), "blocks": [section(text)]}


def submitted_values(view: dict[str, Any]) -> dict[str, Any]:
    """The values of a submitted modal: ``{block_id: text | [checkbox values] | option value}``."""
    out: dict[str, Any] = {}
    for block_id, elements in ((view.get("state") or {}).get("values") or {}).items():
        for element in elements.values():
            kind = element.get("type")
            if kind == "checkboxes":
                out[block_id] = [str(o.get("value")) for o in element.get("selected_options") or []]
            elif kind in ("radio_buttons", "static_select"):
                chosen = element.get("selected_option")
                out[block_id] = str(chosen.get("value")) if isinstance(chosen, dict) else None
            else:
                out[block_id] = element.get("value")
    return out


def parse_groups(text: str | None) -> list[str]:
    """Group names, one per line (commas accepted too), blanks and repeats dropped."""
    seen: list[str] = []
    for part in (text or "").replace(",", "\n").splitlines():
        name = part.strip()
        if name and name not in seen:
            seen.append(name)
    return seen
