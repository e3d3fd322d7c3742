"""The Ur-Quan Masters' dialogue text: blocks, continuations, subtitle pages and what is spoken on each.

A character's ``<name>.txt`` is a list of blocks::

    #(NORMAL_HELLO_D0) starbase-010.ogg      <- a block that names its clip
    Ah, Captain
    #(NORMAL_HELLO_D1)                       <- a continuation: same stem, next index, no clip
    , I'm glad you're back.

The game splices the player's or ship's name between a block and its continuations; the clip
holds the voice actor's line. Each non-blank line of the joined text is one subtitle *page*;
``<name>.ts`` lists the pages' durations in ms for all pages but the last, which lasts to the
clip's end (2,214 of 2,219 clip blocks of uqm-voice 0.8.0 have exactly pages - 1 durations).
What the audio says where the name goes (checked with pocketsphinx on the clips): the starbase
commander's lines that address the captain read on without a name ("Ah, Captain, I'm glad you're
back"); elsewhere it differs (the starbase's "minor repairs on <ship>" says "your ship", the
Syreen's "Hello, Captain <name> from the Starship <ship>" says only "Hello, Captain"), so there
the page holding the name is marked uncertain. Markup: ``*word*`` is emphasis (spoken),
backquotes are quotes; a page with a parenthesised aside, a ``<telepathic command>``, a stand-alone
``*sigh*``, digits or other symbols has no certain spoken form and is marked uncertain too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dasr.data.text import normalize

_HEADER = re.compile(r"^#\(([^)]*)\)[ \t]*(\S*)[ \t]*$")
_STEM = re.compile(r"(?:\d+|(?<=_)[A-Z])$")
#: characters -> block ids whose name slot is silent in the audio (verified with pocketsphinx)
SILENT_SLOTS = {"starbase": re.compile(r"(NORMAL_HELLO|NORMAL_GOODBYE|LIGHT_LOAD|MEDIUM_LOAD|HEAVY_LOAD)_[A-H]0")}
_UNCERTAIN = (
    (re.compile(r"\([^)]*\)?"), "parenthesised aside"),
    (re.compile(r"<[^>]*>?"), "telepathic command"),
    (re.compile(r"(?:^|[.!?]\s*)\*[^*]+\*\s*(?:[.!?]|$)"), "stand-alone sound effect"),
    (re.compile(r"\d"), "digits"),
    (re.compile(r"[^A-Za-z\s.,;:!?'`\"*-]"), "symbol"),
)


@dataclass
class Block:
    """One ``#(ID) [clip]`` block and the text after it, up to the next header."""

    id: str
    clip: str
    text: str


@dataclass
class ClipText:
    """The text of one clip, as subtitle pages; ``slot_pages`` hold a name the game inserts."""

    character: str
    clip: str
    ids: list[str]
    pages: list[str]
    slot_pages: set[int] = field(default_factory=set)


def read_blocks(text: str) -> list[Block]:
    """Parse a ``<name>.txt`` into blocks (CRLF or LF; lines before the first header are ignored)."""
    blocks: list[Block] = []
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        header = _HEADER.match(line)
        if header:
            if blocks:
                blocks[-1].text = "\n".join(lines)
            blocks.append(Block(header[1], header[2], ""))
            lines = []
        else:
            lines.append(line)
    if blocks:
        blocks[-1].text = "\n".join(lines)
    return blocks


def read_timestamps(text: str) -> dict[str, list[int]]:
    """Parse a ``<name>.ts``: block id -> page durations in ms (empty for one-page clips)."""
    out = {}
    for line in text.replace("\r", "\n").split("\n"):
        header = re.match(r"^#\(([^)]*)\)\s*(.*)$", line)
        if header:
            out[header[1]] = [int(ms) for ms in header[2].split(",") if ms.strip().isdigit()]
    return out


def _is_continuation(block: Block, owner: Block) -> bool:
    """A block without a clip that goes on ``owner``'s line: upper-case id with the same stem."""
    return not block.clip and block.id.isupper() and _STEM.sub("", block.id) == _STEM.sub("", owner.id)


def clip_texts(character: str, blocks: list[Block]) -> list[ClipText]:
    """Every block that names a clip, joined with its continuations and split into pages."""
    out = []
    for i, block in enumerate(blocks):
        if not block.clip:
            continue
        pieces = [block.text.strip("\n")]
        ids = [block.id]
        for follower in blocks[i + 1 :]:
            if not _is_continuation(follower, block):
                break
            pieces.append(follower.text.strip("\n"))
            ids.append(follower.id)
        pages, slot_pages = _pages(pieces)
        silent = SILENT_SLOTS.get(character)
        if silent is not None and silent.fullmatch(block.id):
            slot_pages = set()
        out.append(ClipText(character, block.clip, ids, pages, slot_pages))
    return out


def _pages(pieces: list[str]) -> tuple[list[str], set[int]]:
    """Join a block and its continuations (a name goes at each join); the non-blank lines are pages."""
    joined = ""
    slots = []
    for k, piece in enumerate(pieces):
        if k:
            slots.append(len(joined))
        joined += piece
    pages: list[str] = []
    slot_pages: set[int] = set()
    offset = 0
    for line in joined.split("\n"):
        end = offset + len(line)
        if line.strip():
            if any(offset <= slot <= end for slot in slots):
                slot_pages.add(len(pages))
            pages.append(line.strip())
        offset = end + 1
    return pages, slot_pages


def spoken(page: str) -> tuple[str, str | None]:
    """A page's spoken text, normalised (``dasr.data.text.normalize``), or ``("", reason)`` when uncertain."""
    for pattern, reason in _UNCERTAIN:
        if pattern.search(page):
            return "", reason
    text = normalize(page.replace("*", " ").replace("`", " ").replace('"', " "))
    text = re.sub(r"(^| )'+|'+( |$)", r"\1\2", text).strip()  # quote marks, not apostrophes
    return (text, None) if text else ("", "no words")
