#!/usr/bin/python3
"""Writes edge_cases.jsonl: the hand-written tricky texts of the tokenizer
parity test that need escapes (control characters, combining marks, HTML
entities, special tokens, very long words and texts). Each line is
{"text": ...} with ASCII-only JSON escapes. Run from this directory:
    /usr/bin/python3 make_edge_cases.py
"""
import json
E=[]
a=E.append
# empty / whitespace only
for s in ["", " ", "   ", "\t\n\r ", "\u3000\u00a0\u2003", "\u200b", "\n"]: a(s)
# control and format characters
a("Pneumo\u0007nia with a bell character")
a("\u001b[31mred\u001b[0m alert in the report")
a("zero\u200bwidth\u200cnon\u200djoiner space")
a("soft\u00adhyphen in hemo\u00adglobin")
a("BOM\ufeffinside the text and at the start")
a("\ufeffLeading byte order mark")
a("left-to-right\u200emark and right-to-left\u200fmark")
a("line\u2028separator and para\u2029graph separator")
a("next\u0085line character")
a("\u001cfile\u001dgroup\u001erecord\u001funit separators")
a("tab\tand\vvertical\fform feed")
a("carriage\r\nreturn line feed\rold mac")
a("private\ue000use\U000f0000area")
a("replacement \ufffd character dropped")
a("DEL\u007fcharacter and C1\u0080\u0090\u009fcontrols")
a("interlinear\ufff9annotation\ufffbmarks")
a("word joiner\u2060and invisible\u2062times")
# compatibility / letter-like signs
a("\u212a kelvin, \u2126 ohm, \u212b angstrom, \u00b5 micro, \u03bc mu")
a("combining: e\u0301 A\u030a n\u0303 o\u0308 c\u0327 i\u0307")
a("stacked marks: a\u0301\u0302\u0303\u0304 and x\u0323\u0301")
a("Devanagari nukta: \u0915\u093c \u0921\u093c and virama \u0915\u094d\u0937")
a("Hangul jamo: \u1100\u1161\u11a8 and syllables \ud55c\uad6d\uc5b4")
a("musical: x\U0001d15f\U0001d16d\U0001d165 y \U0001d160")
a("Vietnamese: Vi\u1ec7t Nam, b\u1ec7nh vi\u1ec7n, ph\u1ed5i")
a("Turkish dotted \u0130 and dotless \u0131: \u0130STANBUL, D\u0130YARBAKIR")
a("German \u00df and capital \u1e9e: STRA\u1e9eE, Stra\u00dfe")
a("Greek tonos: \u0386\u0388\u0389\u038a\u038c\u038e\u038f and dialytika \u03aa\u03ab")
a("Cyrillic \u0401\u0451 and \u0419\u0439")
a("CJK compatibility ideographs: \uf900\uf901\ufa0e\ufa30")
a("CJK extension A: \u3400\u3401\u4db5 and Kangxi radicals \u2f00\u2f08")
a("Fullwidth: \uff21\uff22\uff23\uff41\uff10\uff11\uff01\uff1f")
a("Halfwidth katakana: \uff76\uff9e\uff8a\uff9f")
a("hiragana with dakuten: \u304c\u304e\u3050 and \u304b\u3099")
a("Arabic diacritics: \u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f")
a("Hebrew points: \u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd")
a("Thai tone marks: \u0e40\u0e2d\u0e01\u0e0b\u0e40\u0e23\u0e22\u0e4c \u0e1b\u0e2d\u0e14")
a("Mongolian vowel separator \u180e here")
a("ideographic space\u3000between\u3000words")
a("narrow\u202fno-break\u205fmath space\u1680ogham")
a("emoji sequence \U0001f469\u200d\u2695\ufe0f and flag \U0001f1e9\U0001f1ea and keycap 1\ufe0f\u20e3")
a("variation selectors: \u2764\ufe0f \u2764\ufe0e \u845b\U000e0100")
a("tag characters \U000e0067\U000e0062 and \U0001f3f4")
a("mathematical bold \U0001d400\U0001d401\U0001d402 and script \U0001d49c")
a("Enclosed \u24b6\u24b7\u24b8 and \u24d0\u24d1")
a("Roman \u2160\u2161\u2162 \u216b")
a("punctuation: \u2018\u2019\u201c\u201d\u2026\u2014\u2013\u2010\u2011\u00b7\u2022\u203b\u3001\u3002\u300c\u300d\uff08\uff09")
a("symbols not punctuation: $ + < = > ^ ` | ~ \u00a7 \u00b6 \u00a9 \u00ae \u00b0 \u00b1")
# HTML entities
for s in ["&#0;zero", "&#x80;euro &#x9F;Y", "&#x81; and &#129;", "&#xD800;surrogate", "&#1114112;too big", "&#99999999999999999999999999;huge",
          "&#1;&#8;&#11;&#14;&#31;&#127;&#x7F; invalid", "&#xFDD0;&#xFFFE;&#x1FFFF;&#x10FFFF; noncharacters", "&#13;cr&#10;lf&#9;tab&#32;sp",
          "&#65&#66;&#x43&#X44; letters", "&#0065;&#x0000041;", "&#x3b1&#x3B2;", "&#;&#x;&#xG;&# 5;",
          "&amp;amp;amp;amp; quadruple", "&ampx &ampxyz; &amp", "&notit; &notin; &not", "&LT; &Lt; &lT; &GT &QUOT &AMP;", "&lt3 &gt= &copy2023 &reg;istered",
          "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; long name", "&ampaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; long legacy prefix",
          "&amp\u00e9; unicode after", "&\u00e9; &\u4e2d; &x\ud55c;", "&nbsp&nbsp;&NonBreakingSpace; spaces", "&Tab;&NewLine;&#x2028; whitespace entities",
          "&amp;#39; &amp;#x27; &amp;quot; double numeric", "&amp;&amp;&amp; triple", "&&&&; ampersands", "& ; & amp; &\tlt;",
          "&deg&micro&plusmn&times&divide&middot&frac12&sup2&frac14&frac34&sup3", "&alpha;&Alpha;&thetasym;&sigmaf;&omega;",
          "&lsquo;&rsquo;&ldquo;&rdquo;&hellip;&bull;&prime;&Prime;&permil;&euro;&trade;", "&le;&ge;&ne;&asymp;&infin;&minus;&radic;&sum;&rarr;&larr;",
          "&ohm;&angst;&micro;&mho;", "&lbrack;MASK&rbrack; &#91;CLS&#93; &lsqb;UNK&rsqb;", "&amp;#91;SEP&amp;#93; double escaped special",
          "&zwj;&zwnj;&lrm;&rlm;&shy; invisible entities", "&quot&apos;&apos no-semicolon apos"]:
    a(s)
# special tokens
for s in ["[MASK]pneumonia[SEP]", "x[UNK]y", "[CLS][CLS][CLS]", "[ SEP ] [SEP ] [MAS K]", "[MASK", "MASK]", "[[[MASK]]]", "[PAD][PAD] padded", "[Mask] [mask] [MASK]"]:
    a(s)
# long words
a("a"*100); a("a"*101); a("\u00e9"*101); a("e\u0301"*100); a("\u00e9"*100); a("\uac00"*33); a("\uac00"*34); a("\u4e2d"*150)
a("x"*5000)
a("ab"*60 + " " + "lung"*24 + "s")
# long texts far over the context
base = ["The lungs are clear.", "There is no pleural effusion or pneumothorax.", "Heart size is normal.",
        "A 5mm nodule in the right upper lobe is unchanged since 2019.", "Degenerative changes of the thoracic spine.",
        "Pulmonary vasculature within normal limits; no Kerley B lines.", "IMPRESSION: no acute cardiopulmonary abnormality."]
a(" ".join(base*12))
a(" ".join(base*60))
a(" ".join(("pneumonia " * 300).split()))
a(", ".join(str(i) for i in range(400)))
a("\u80f8\u90e8" * 200)
a("\U0001fac1" * 300)
a("x" + " " * 10000 + "y")
a("&amp;" * 500)
a("[MASK] " * 300)
with open('edge_cases.jsonl','w',encoding='utf-8') as f:
    for s in E:
        f.write(json.dumps({"text": s}, ensure_ascii=True)+"\n")
print(len(E))
