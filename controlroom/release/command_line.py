"""The `:` command line's words (k9s style), without the UI: what a line means, and how Tab
completes it.

    names = Names(views=(("checklist", "c"), ("rollback", "R")), items=("on-call",), steps=("verify-alerts",))
    parse(":attest on-call", names)              # Parsed(verb="attest", args=("on-call",))
    parse("skip verify-alerts alerts are muted", names).args   # ("verify-alerts", "alerts are muted")
    complete("att", names)                       # Completion(line="attest ", candidates=("attest",))

A line names a command; it never decides whether the command is allowed. The app turns a
Parsed into the same action the command's key runs (selecting the item or step first), so the
engine refuses it, and the same dialog asks, exactly as for the key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass

ITEM, MANUAL_ITEM, STEP, REASON = "ITEM-ID", "MANUAL-ITEM-ID", "STEP-ID", "REASON…"


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    args: tuple[str, ...] = ()  # ITEM, MANUAL_ITEM, STEP or REASON (the rest of the line)
    optional: int = 0  # how many of the trailing args may be left out
    aliases: tuple[str, ...] = ()


VERBS: tuple[Verb, ...] = (
    Verb("attest", "attest a manual checklist item (asks first, as a)", (MANUAL_ITEM,)),
    Verb("notmet", "record a manual item as NOT met (asks why, as A)", (MANUAL_ITEM,)),
    Verb("rerun", "re-run one check, or every check", (ITEM,), optional=1),
    Verb("run", "run a deployment step (asks first when it changes anything, as x)", (STEP,)),
    Verb("skip", "skip a deployment step; the reason is filled in, you confirm it (as z)", (STEP, REASON),
         optional=1),
    Verb("report", "write the post-deployment report and show it (as ctrl+r)"),
    Verb("help", "the help of this screen (as ?)"),
    Verb("keys", "every key with its binding id (settings.toml [keys] remaps them)"),
    Verb("shell", "a shell, then back here (as !)"),
    Verb("quit", "quit (asks first while something is in progress, as q)", aliases=("q",)),
)


@dataclass(frozen=True)
class Names:
    """What the words may name: the views shown (name, key alias), the checklist's item ids,
    the manual ones among them, and the deployment's step ids."""

    views: tuple[tuple[str, str], ...] = ()
    items: tuple[str, ...] = ()
    manual_items: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()

    def verbs(self) -> dict[str, str]:
        """Every word a line may start with -> the command it names (views included)."""
        words: dict[str, str] = {}
        for name, alias in self.views:
            words[name] = name
            words.setdefault(alias, name)
            words.setdefault(alias.lower(), name)
        for verb in VERBS:
            words[verb.name] = verb.name
            for alias in verb.aliases:
                words[alias] = verb.name
        return words

    def ids(self, kind: str) -> tuple[str, ...]:
        if kind == ITEM:
            return self.items
        if kind == MANUAL_ITEM:
            return self.manual_items or self.items
        if kind == STEP:
            return self.steps
        return ()


@dataclass(frozen=True)
class Parsed:
    verb: str  # a verb's name, or a view's name
    args: tuple[str, ...] = ()
    view: bool = False


@dataclass(frozen=True)
class Completion:
    line: str  # the line completed as far as the candidates agree
    candidates: tuple[str, ...]  # what the word being typed may become


class CommandLineError(ValueError):
    """A line that names nothing: said in one line, with the nearest word when there is one."""


def _verb(name: str) -> Verb | None:
    return next((verb for verb in VERBS if verb.name == name), None)


def _nearest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    if not close:
        close = [choice for choice in choices if choice.startswith(word[:2])][:1] if len(word) >= 2 else []
    return f" (did you mean {close[0]}?)" if close else ""


def usage(verb: Verb) -> str:
    args = [f"[{arg}]" if index >= len(verb.args) - verb.optional else arg for index, arg in enumerate(verb.args)]
    return " ".join([f":{verb.name}", *args])


def parse(line: str, names: Names) -> Parsed:
    """What `line` (with or without its leading `:`) asks for; CommandLineError when it names
    no command or no id of the runbook."""
    text = line.strip().removeprefix(":").strip()
    if not text:
        raise CommandLineError("type a command, e.g. :rollback or :attest ITEM-ID (Tab completes)")
    word, _, rest = text.partition(" ")
    words = names.verbs()
    if word not in words:
        raise CommandLineError(f"unknown command :{word}{_nearest(word, sorted(words))}")
    name = words[word]
    verb = _verb(name)
    if verb is None:  # a view
        if rest.strip():
            raise CommandLineError(f":{word} takes nothing after it")
        return Parsed(name, view=True)
    args: list[str] = []
    rest = rest.strip()
    for index, kind in enumerate(verb.args):
        if kind == REASON:
            if rest:
                args.append(rest)
            rest = ""
            break
        value, _, rest = rest.partition(" ")
        rest = rest.strip()
        if not value:
            if index >= len(verb.args) - verb.optional:
                break
            raise CommandLineError(f"{usage(verb)}: which {kind.removesuffix('-ID').lower().replace('-', ' ')}? "
                                   "(Tab lists them)")
        known = names.ids(kind)
        if value not in known and value not in names.items + names.steps:
            what = "step" if kind == STEP else "checklist item"
            raise CommandLineError(f"no {what} {value!r} in the runbook{_nearest(value, known)}")
        args.append(value)
    if rest:
        raise CommandLineError(f"{usage(verb)}: {rest!r} is one word too many")
    return Parsed(name, tuple(args))


def complete(line: str, names: Names) -> Completion:
    """Tab: the word under the cursor (the last one) completed as far as its candidates agree,
    and the candidates. A reason is free text: nothing to complete."""
    text = line.removeprefix(":")
    words = text.split(" ")
    if len(words) == 1:
        candidates = sorted({w for w in names.verbs() if len(w) > 1 or w == text} | {n for n, _ in names.views})
        choices = tuple(c for c in candidates if c.startswith(text))
    else:
        verb = _verb(names.verbs().get(words[0], ""))
        position = len(words) - 2
        if verb is None or position >= len(verb.args) or verb.args[position] == REASON:
            return Completion(line, ())
        choices = tuple(i for i in names.ids(verb.args[position]) if i.startswith(words[-1]))
    if not choices:
        return Completion(line, ())
    common = os.path.commonprefix(list(choices))
    done = len(choices) == 1
    words[-1] = common + (" " if done else "")
    prefix = ":" if line.startswith(":") else ""
    return Completion(prefix + " ".join(words), choices)
