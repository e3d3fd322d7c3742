"""The private apt cache's sources come from the system's own, in both formats; its licence summary."""

from __future__ import annotations

from dasr.data.debfetch import DebCache, system_sources


def test_system_sources_reads_one_line_and_deb822_entries(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n"
        "deb-src http://mirror.example/debian bookworm main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: sid\nEnabled: no\n"
    )
    assert system_sources(tmp_path) == [
        ("http://mirror.example/debian", "bookworm"),
        ("http://deb.debian.org/debian", "bookworm"),
        ("http://deb.debian.org/debian", "bookworm-updates"),
    ]


def test_licences_name_the_dep5_licences_or_point_to_the_file(tmp_path):
    cache = DebCache(tmp_path)
    doc = cache.root / "usr/share/doc"
    (doc / "a").mkdir(parents=True)
    (doc / "a" / "copyright").write_text("Files: *\nLicense: GPL-2+\n\nFiles: voices/*\nLicense: CC-BY-NC-ND-4.0\n")
    (doc / "b").mkdir()
    (doc / "b" / "copyright").write_text("This database is provided to You for non-commercial use.\n")
    licences = cache.licences(["a", "b"])
    assert licences["a"].startswith("GPL-2+, CC-BY-NC-ND-4.0 (full text: ")
    assert licences["b"].startswith("not in DEP-5 form")
