#!/usr/bin/env python3
"""Writes the tiny synthetic WordNet / FreeDict / countryinfo samples used by the icl-tasks tests
(crates/icl-tasks/tests/data). Hand-made data in the real file formats (wndb(5WN), dictd,
countryinfo JSON); offsets are real byte offsets so the files are valid for other readers too.

Run from the repository root: python3 tools/make_icl_tasks_testdata.py
"""
import json
import os

OUT = "crates/icl-tasks/tests/data"
HEADER = "  1 This is a synthetic WordNet-format sample for tests, not WordNet itself.\n"


def write_data(path, synsets, ss_type_of):
    """synsets: list of (key, lex_filenum, ss_type, [words], [(sym, target_key, pos, st)], gloss).
    Offsets are byte offsets; they depend on the offsets written in earlier lines, so iterate."""
    offs = {k: 0 for k, *_ in synsets}
    for _ in range(5):
        text = HEADER
        new = {}
        for key, lex, ss, words, ptrs, gloss in synsets:
            new[key] = len(text.encode())
            w = " ".join(f"{x} 0" for x in words)
            p = " ".join(f"{s} {offs[t]:08d} {pos} {st}" for s, t, pos, st in ptrs)
            line = f"{offs[key]:08d} {lex:02d} {ss} {len(words):02x} {w} {len(ptrs):03d}"
            line += (" " + p if p else "") + f" | {gloss}  \n"
            text += line
        if new == offs:
            break
        offs = new
    open(path, "w").write(text)
    return offs


def write_index(path, entries, offs, pos):
    """entries: list of (lemma, [keys], tagsense_cnt, [ptr symbols])."""
    lines = [HEADER]
    for lemma, keys, tag, syms in sorted(entries):
        lines.append(
            f"{lemma} {pos} {len(keys)} {len(syms)} {' '.join(syms)}{' ' if syms else ''}"
            f"{len(keys)} {tag} {' '.join(f'{offs[k]:08d}' for k in keys)}  \n"
        )
    open(path, "w").write("".join(lines))


def wordnet():
    d = f"{OUT}/wordnet"
    os.makedirs(d, exist_ok=True)
    H = "@"
    nouns = [
        ("entity", 3, "n", ["entity"], [], "that which exists"),
        ("organism", 3, "n", ["organism"], [(H, "entity", "n", "0000")], "a living thing"),
        ("animal", 3, "n", ["animal", "beast"], [(H, "organism", "n", "0000")], "a living organism that moves"),
        ("flora", 3, "n", ["plant", "flora"], [(H, "organism", "n", "0000")], "a living organism lacking locomotion"),
        ("artifact", 6, "n", ["artifact"], [(H, "entity", "n", "0000")], "a man-made object"),
        ("factory", 6, "n", ["plant", "works"], [(H, "artifact", "n", "0000")], "buildings for industry"),
        ("nutrient", 3, "n", ["food", "nutrient"], [(H, "entity", "n", "0000")], "any substance metabolized"),
        ("solid_food", 13, "n", ["food", "solid_food"], [(H, "nutrient", "n", "0000")], "solid nourishment"),
    ]
    classes = {
        "vehicle": ["vehicle"], "clothing": ["clothing"], "furniture": ["furniture"], "tool": ["tool"],
        "musical_instrument": ["musical_instrument", "instrument"], "weapon": ["weapon", "arm"],
        "building": ["building", "edifice"],
    }
    for k, words in classes.items():
        nouns.append((k, 6, "n", words, [(H, "artifact", "n", "0000")], f"class {k}"))
    members = {
        "animal": ["dog", "cat", "horse", "eagle", "frog", "deer", "wolf", "sheep", "aardwolf"],
        "flora": ["oak", "grass", "fern", "rose", "moss"],
        "solid_food": ["bread", "cheese", "steak", "soup", "ice_cream"],
        "vehicle": ["car", "truck", "bicycle", "boat"],
        "clothing": ["shirt", "coat", "hat"],
        "furniture": ["chair", "table", "bed"],
        "tool": ["hammer", "saw"],
        "musical_instrument": ["piano", "guitar"],
        "weapon": ["sword", "gun"],
        "building": ["house", "church", "tower"],
    }
    tags = {}
    for cls, ws in members.items():
        for w in ws:
            nouns.append((w, 5, "n", [w], [(H, cls, "n", "0000")], f"a kind of {cls}"))
            tags[w] = 0 if w == "aardwolf" else 5
    # Ambiguous and two-sense nouns: chicken is food and animal (dropped); mouse is an animal and a
    # device outside every class (kept); lassie is an instance of dog (instance hypernym).
    nouns += [
        ("chicken_food", 13, "n", ["chicken"], [(H, "solid_food", "n", "0000")], "the flesh of a chicken"),
        ("chicken_bird", 5, "n", ["chicken"], [(H, "animal", "n", "0000")], "a domestic fowl"),
        ("mouse_animal", 5, "n", ["mouse"], [(H, "animal", "n", "0000")], "a small rodent"),
        ("device", 6, "n", ["device"], [(H, "artifact", "n", "0000")], "an instrumentality"),
        ("mouse_device", 6, "n", ["mouse"], [(H, "device", "n", "0000")], "a hand-operated pointer"),
        ("lassie", 18, "n", ["Lassie"], [("@i", "dog", "n", "0000")], "a famous dog"),
    ]
    offs = write_data(f"{d}/data.noun", nouns, None)
    idx = [
        ("entity", ["entity"], 3, ["~"]), ("organism", ["organism"], 3, ["@", "~"]),
        ("animal", ["animal"], 9, ["@", "~"]), ("beast", ["animal"], 1, ["@"]),
        ("plant", ["factory", "flora"], 9, ["@", "~"]), ("flora", ["flora"], 1, ["@"]),
        ("works", ["factory"], 1, ["@"]), ("artifact", ["artifact"], 4, ["@", "~"]),
        ("food", ["nutrient", "solid_food"], 9, ["@", "~"]), ("nutrient", ["nutrient"], 1, ["@"]),
        ("solid_food", ["solid_food"], 1, ["@"]), ("chicken", ["chicken_food", "chicken_bird"], 6, ["@"]),
        ("mouse", ["mouse_animal", "mouse_device"], 6, ["@"]), ("device", ["device"], 4, ["@"]),
        ("lassie", ["lassie"], 0, ["@i"]),
    ]
    for k, words in classes.items():
        for w in words:
            idx.append((w, [k], 4, ["@", "~"]))
    for cls, ws in members.items():
        for w in ws:
            idx.append((w, [w], tags[w], ["@"]))
    write_index(f"{d}/index.noun", idx, offs, "n")

    adjs = [
        ("big", 0, "a", ["big", "large"], [("!", "small", "a", "0102"), ("!", "small", "a", "0201")], "above average size"),
        ("small", 0, "a", ["small", "little"], [("!", "big", "a", "0102"), ("!", "big", "a", "0201")], "below average size"),
        ("hot", 0, "a", ["hot"], [("!", "cold", "a", "0101"), ("&", "tepid", "a", "0000")], "high temperature"),
        ("tepid", 0, "s", ["tepid(a)", "lukewarm"], [("&", "hot", "a", "0000")], "moderately warm"),
        ("cold", 0, "a", ["cold"], [("!", "hot", "a", "0101")], "low temperature"),
        ("good", 0, "a", ["good"], [("!", "bad", "a", "0101"), ("!", "evil", "a", "0101")], "having desirable qualities"),
        ("bad", 0, "a", ["bad"], [("!", "good", "a", "0101")], "having undesirable qualities"),
        ("evil", 0, "a", ["evil"], [("!", "good", "a", "0101")], "morally wrong"),
    ]
    simple = [("happy", "unhappy"), ("wet", "dry"), ("fast", "slow"), ("light", "dark"),
              ("early", "late"), ("rich", "poor"), ("open", "closed"), ("hard", "soft"),
              ("abaxial", "adaxial"), ("up_to_date", "out_of_date")]
    for a, b in simple:
        adjs.append((a, 0, "a", [a], [("!", b, "a", "0101")], f"{a}"))
        adjs.append((b, 0, "a", [b], [("!", a, "a", "0101")], f"{b}"))
    offs = write_data(f"{d}/data.adj", adjs, None)
    aidx = []
    for key, _, _, words, _, _ in adjs:
        for w in words:
            w = w.split("(")[0]
            aidx.append((w, [key], 0 if w in ("abaxial", "adaxial") else 3, ["!"]))
    write_index(f"{d}/index.adj", aidx, offs, "a")


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n):
    s = ""
    while True:
        s = B64[n % 64] + s
        n //= 64
        if n == 0:
            return s


def freedict():
    d = f"{OUT}/freedict"
    os.makedirs(d, exist_ok=True)
    entries = [
        ("00databaseinfo", "00databaseinfo synthetic sample for tests\n"),
        ("abandon", "abandon /əbændən/\n1. abandonner, délaisser\n2. quitter\n"),
        ("apple", "apple /æpl/\npomme\n"),
        ("big", "big\ngrand, gros\n"),
        ("book", "book /bʊk/\n1. livre\n2. réserver\n"),
        ("bread", "bread\npain\n"),
        ("cat", "cat /kæt/\n1. chat\n2. matou\n"),
        ("cheese", "cheese\nfromage\n"),
        ("dog", "dog\nchien\n"),
        ("hello", "hello\n1. s'il vous plaît, bonjour\n"),
        ("house", "house\nmaison\n"),
        ("make up", "make up\nmaquiller\n"),
        ("Paris", "Paris\nParis\n"),
        ("red", "red\nrouge\n"),
        ("small", "small\npetit\n"),
        ("summer", "summer\nété\n"),
        ("taxi", "taxi\ntaxi\n"),
        ("tree", "tree\narbre\n"),
        ("water", "water /wɔːtər/\neau\n"),
    ]
    data = b""
    idx = []
    for head, text in entries:
        raw = text.encode()
        idx.append(f"{head}\t{b64(len(data))}\t{b64(len(raw))}\n")
        data += raw
    open(f"{d}/freedict-eng-fra.dict", "wb").write(data)
    open(f"{d}/freedict-eng-fra.index", "w").write("".join(idx))


def countryinfo():
    d = f"{OUT}/countryinfo"
    os.makedirs(d, exist_ok=True)
    caps = {
        "france": ("France", "Paris"), "germany": ("Germany", "Berlin"), "italy": ("Italy", "Rome"),
        "spain": ("Spain", "Madrid"), "japan": ("Japan", "Tokyo"), "egypt": ("Egypt", "Cairo"),
        "kenya": ("Kenya", "Nairobi"), "peru": ("Peru", "Lima"), "chile": ("Chile", "Santiago"),
        "canada": ("Canada", "Ottawa"), "norway": ("Norway", "Oslo"), "united_states": ("United States", "Washington D.C."),
        "colombia": ("Colombia", "Bogotá"), "singapore": ("Singapore", "Singapore"),
        "antarctica": ("Antarctica", None), "holy_see": ("Vatican City State", ["Vatican City"]),
        "india": ("India", "New Delhi"),
    }
    for f, (name, cap) in caps.items():
        obj = {"name": name, "capital": cap, "region": "synthetic", "ISO": {"alpha2": "XX"}}
        json.dump(obj, open(f"{d}/{f}.json", "w"), ensure_ascii=False, indent=2)


if __name__ == "__main__":
    wordnet()
    freedict()
    countryinfo()
