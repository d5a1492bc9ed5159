#!/usr/bin/env python3
"""Write the tokenizer test corpus tests/coordinator/data/tok_corpus.txt (deterministic).

One test case per line, escaped so the file itself is valid UTF-8 and one case never spans
lines: "\\\\" = backslash, "\\n" "\\r" "\\t" = those bytes, "\\xHH" = any other byte (C0 controls,
DEL, and every byte of ill-formed UTF-8). Everything else is literal UTF-8. Lines starting
with "#" are comments naming the section that follows.

Sections: English, Chinese, Japanese, Korean, Arabic and other scripts, source code,
emoji and ZWJ sequences, digit runs, whitespace runs, mixed scripts, control characters,
added/special tokens inside text, random code points (all of Unicode 16, including the
15.0-16.0 additions that need tok_unicode.c), random bytes (invalid UTF-8).

Usage: make_corpus.py [OUT]   (stdlib only; regen.sh runs it)
"""
import random
import sys
import unicodedata

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/coordinator/data/tok_corpus.txt"
rng = random.Random(20240611)
cases = []  # (section, bytes)


def add(section, text):
    cases.append((section, text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text))


ENGLISH = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged that a single man in possession of a good fortune must be in want of a wife.",
    "I'm sure you'll agree: they've done it, we'd like it, and she's happy.",
    "Don't panic. DON'T PANIC! don't-panic; \"Don't\" panic?",
    "Mr. O'Neil's e-mail (sent 3/4/2021 at 10:30am) said: \"See https://example.com/a?b=c&d=e#f.\"",
    "  leading spaces and trailing spaces  ",
    "Tabs\tbetween\twords\tand\ta trailing tab\t",
    "Line one\nLine two\n\nLine four after a blank line",
    "Windows line endings\r\nsecond line\r\n",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS #$%",
    "camelCaseIdentifier snake_case_identifier kebab-case-identifier SCREAMING_SNAKE_CASE",
    "Punctuation runs!!! ??? ... --- ___ *** ;;; ::: ,,, ''' \"\"\"",
    "Ellipsis… em—dash – en-dash ‘curly’ “quotes” «guillemets» ‹single›",
    "Price: $1,234.56 (€1.234,56; £999; ¥10000; ₹5,00,000; ₿0.001)",
    "Math: ∀x∈ℝ, x²≥0; ∑ᵢ aᵢ = ∫₀¹ f(x) dx ≈ π/4 ± 0.01; ¬(p ∧ q) ⇔ (¬p ∨ ¬q)",
    "Temperature: -40°C = -40°F; 100 km/h ≈ 62.14 mph; 5′11″",
    "E = mc^2, a^2 + b^2 = c^2, sqrt(2) ~ 1.41421356",
    "The year 2024 had 366 days; 1,000,000 people; 3.14159265358979; 0.000001; 1e-9; 6.022e23",
    "https://www.example.org/path/to/resource.html?query=value&other=123#section-2",
    "user@example.com, first.last+tag@sub.domain.co.uk",
    "C:\\Users\\Name\\Documents\\file.txt and /usr/local/bin/python3",
    "Version v1.2.3-beta.4+build.567 released on 2024-06-11T12:34:56Z",
    "#hashtag @mention $TICKER %percent ^caret &ampersand *star",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "A.B.C.D. e.g. i.e. etc. vs. Dr. St. Mt.",
    "Naïve café résumé coöperate façade jalapeño Zürich Øresund Ångström",
    "Straße, Maße, Fußball; ÄÖÜ äöü ß ẞ",
    "Œuvre, æther, Ærø, ĳssel, ﬁnance, ﬂuffy (ligatures)",
    "I ❤ NY",
    "This is a sentence with a URL https://github.com/huggingface/tokenizers and more text after it.",
    "Q: What is 2+2?\nA: 4.",
    "- item one\n- item two\n  - nested item\n* star item\n1. numbered",
    "| col1 | col2 |\n|------|------|\n| a    | b    |",
    "> quoted text\n>> double quoted",
    "**bold** __bold__ *italic* _italic_ `code` ~~strike~~",
    "[link](http://x.y) ![image](a.png)",
]

CHINESE = [
    "你好，世界！",
    "毕老师！1 + 1 = 2",
    "深度学习是机器学习的一个分支，它使用多层神经网络来学习数据的表示。",
    "今天天气很好，我们去公园散步吧。",
    "中华人民共和国成立于1949年10月1日。",
    "《红楼梦》是中国古典四大名著之一，作者曹雪芹。",
    "请问，这个问题的答案是什么？我不太明白。",
    "人工智能（AI）正在改变世界：从自动驾驶到医疗诊断。",
    "北京、上海、广州、深圳是中国的一线城市。",
    "他说：“我明天会来。”然后就走了。",
    "数学公式：x² + y² = z²，其中x、y、z都是正整数。",
    "繁體中文：臺灣的傳統文化與現代科技。",
    "龘靐齉爩麤（生僻字）",
    "我爱北京天安门，天安门上太阳升。",
    "机器翻译的质量在过去十年中显著提高。",
    "价格：¥199.00元，折扣８折。",
    "第一章　总则　第一条　为了规范……",
    "推理",
    "答案",
    "这是一个测试句子，包含中文标点符号：，。！？；：「」『』（）【】《》",
]

JAPANESE = [
    "こんにちは、世界！",
    "私は日本語を勉強しています。",
    "東京は日本の首都です。人口は約1400万人です。",
    "カタカナ：コンピューター、インターネット、プログラミング",
    "ひらがなとカタカナと漢字が混ざった文章です。",
    "吾輩は猫である。名前はまだ無い。",
    "ｱｲｳｴｵ（半角カナ）とアイウエオ（全角カナ）",
    "「こんにちは」と彼は言った。",
    "ゝゞヽヾ々〆〇ー",
    "令和6年6月11日（火）午後3時",
    "機械学習モデルのトレーニングには大量のデータが必要です。",
]

KOREAN = [
    "안녕하세요, 세계!",
    "저는 한국어를 공부하고 있습니다.",
    "서울은 대한민국의 수도입니다.",
    "한글은 세종대왕이 창제했습니다. 1443년에 만들어졌습니다.",
    "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎ ㅏㅑㅓㅕㅗㅛㅜㅠㅡㅣ",
    "인공지능 기술이 빠르게 발전하고 있습니다!",
    "맛있는 김치찌개를 먹었어요 ㅋㅋㅋ",
]

OTHER_SCRIPTS = [
    "مرحبا بالعالم!",
    "اللغة العربية هي لغة رسمية في أكثر من 20 دولة.",
    "السَّلَامُ عَلَيْكُمْ وَرَحْمَةُ اللهِ وَبَرَكَاتُهُ",
    "الرقم ١٢٣٤٥٦٧٨٩٠ بالأرقام العربية الهندية",
    "שלום עולם! עברית נכתבת מימין לשמאל.",
    "Привет, мир! Как дела?",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Γειά σου Κόσμε! Αλφάβητο: αβγδεζηθικλμνξοπρστυφχψω",
    "नमस्ते दुनिया! हिन्दी भारत की राजभाषा है।",
    "संस्कृतम् जगतः एकतमा अतिप्राचीना समृद्धा शास्त्रीया च भाषा।",
    "স্বাগতম! বাংলা ভাষা",
    "வணக்கம் உலகம்! தமிழ் மொழி",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Xin chào thế giới! Tiếng Việt có nhiều dấu thanh.",
    "Ողջույն աշխարհ։ Հայերեն",
    "გამარჯობა მსოფლიო! ქართული",
    "ሰላም ለዓለም! አማርኛ",
    "Merhaba dünya! İstanbul, Ğğ Şş Çç Öö Üü Iı",
    "Witaj świecie! Zażółć gęślą jaźń.",
    "Dobrý den, světe! Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ (Mongolian)",
    "ᚠᚢᚦᚨᚱᚲ ᚷᚹ (runes) 𐌀𐌁𐌂 (Old Italic) 𓀀𓀁𓂀 (hieroglyphs)",
    "ꦲꦏ꧀ꦱꦫꦗꦮ (Javanese) ᜀᜁᜂ (Tagalog)",
]

CODE = [
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "int main(int argc, char **argv) {\n\tprintf(\"%d\\n\", argc);\n\treturn 0;\n}",
    "for (size_t i = 0; i < n; i++) { sum += a[i] * b[i]; }",
    "const x = (a, b) => a?.b ?? b; // optional chaining",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "{\"key\": \"value\", \"num\": 42, \"arr\": [1, 2.5, true, null], \"obj\": {}}",
    "<div class=\"container\"><p id='x'>Hello &amp; welcome</p></div>",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))",
    "git commit -m \"fix: handle edge case\" && git push origin main",
    "ls -la | grep '\\.txt$' | awk '{print $9}' > out.log 2>&1",
    "fn main() { let v: Vec<i32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
    "public static void main(String[] args) throws IOException {}",
    "    if x == 1:\n        pass\n    elif x == 2:\n        raise ValueError('bad')\n",
    "x = [i**2 for i in range(100) if i % 3 == 0]",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)",
    "regex = r'^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$'",
    "matrix[i][j] += alpha * (x[i] - mu) / (sigma + 1e-8);",
    "<?php echo $var; ?> <% ruby %> {{ jinja }} {% block %}",
    "0x7fffffff 0b101010 0o777 1_000_000 3.14f 2.5e-3L",
    "a->b->c; *p++ = *q--; x <<= 2; y >>>= 1; z ^= ~w;",
    "/* block comment */ // line comment\n# python comment\n-- sql comment",
    "__init__ __name__ == \"__main__\" self.__dict__",
    "    \n\t\n  \t  \n",
    "}}}}]]]])))) ((((([[[[{{{{",
    "lambda: None; async def f(): await g()",
    "std::vector<std::unique_ptr<Foo>> v; template<typename T> T max(T a, T b);",
]

EMOJI = [
    "😀😃😄😁😆😅🤣😂🙂🙃😉😊😇",
    "👍👍🏻👍🏼👍🏽👍🏾👍🏿",
    "👨‍👩‍👧‍👦 family, 👩‍💻 technologist, 🏳️‍🌈 rainbow flag, 🏴‍☠️ pirate flag",
    "🧑🏽‍🚀 astronaut, 👁️‍🗨️ eye in speech bubble, ❤️‍🔥 heart on fire, 😶‍🌫️",
    "🇺🇸🇨🇳🇯🇵🇰🇷🇩🇪🇫🇷🇬🇧🇮🇳 flags",
    "#️⃣ *️⃣ 0️⃣ 1️⃣ 2️⃣ keycaps",
    "I love pizza 🍕 and tacos 🌮!!! 🎉🎉🎉",
    "🫠🫡🫢🫣🫤🥹 (Unicode 14 emoji)",
    "🫨🫷🫸🩷🩵🩶🪇🪈🪮🪭 (Unicode 15 emoji)",
    "🙂‍↔️🙂‍↕️🚶‍➡️🧎‍➡️🏃‍➡️ (Unicode 15.1 sequences)",
    "🫩🫆🪾🫜🪉🪏🫟 (Unicode 16 emoji)",
    "☺ ☹ ☠ ♥ ♦ ♣ ♠ ★ ☆ ✓ ✗ ✔ ✘ ➜ ⇒",
    "emoji🙂inside🙃words",
    "👩🏽‍❤️‍💋‍👨🏿 kiss with skin tones",
    "🏻🏼🏽🏾🏿 bare skin tone modifiers",
    "\U0001F9D1\u200D\U0001F91D\u200D\U0001F9D1 people holding hands",
    "text with variation selectors: ✌︎ ✌️ ☎︎ ☎️",
]

SPECIAL = [
    "<｜begin▁of▁sentence｜><｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>",
    "<｜User｜>hello<｜Assistant｜></think>",
    "before<think>inside</think>after",
    "<think><think></think></think>",
    "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
    "｜DSML｜｜DSML｜ DSML ｜ DSML｜",
    "<｜latest_reminder｜>reminder<｜action｜><｜query｜><｜authority｜><｜domain｜><｜title｜><｜read_url｜>",
    "<｜image｜><｜image｜> two images",
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>",
    "<｜place▁holder▁no▁5｜> <｜place▁holder▁no▁799｜>",
    "<|place_holder_mm_span_0021|><|place_holder_mm_span_0435|>",
    "<｜/table>｜<｜table｜><｜td｜>cell<｜/td｜><｜tr｜></｜tr｜>",
    "<｜ref｜>box<｜/ref｜><｜box｜>(1,2),(3,4)<｜/box｜><｜point｜><｜/point｜>",
    "<dsml:tag></dsml:tag>",
    "<｜Use <｜User <think <thin> </think > < think> <｜User｜ ｜User｜>",
    "<｜User｜><｜User｜><｜User｜>",
    "<|EOT|> <|endoftext|> <s> </s> [INST] <<SYS>>",
    "x<｜end▁of▁sentence｜>y<｜▁pad▁｜>z",
    "<｜begin▁of▁sentence｜",
    "<｜rl_image_pad｜><｜rl_image_start｜><｜image2｜>",
    "<｜end_of_query｜><｜search▁begin｜>q<｜search▁end｜><｜extracted_url｜>",
]

# ---- hand-written sections ----
for s in ENGLISH:
    add("english", s)
for s in CHINESE:
    add("chinese", s)
for s in JAPANESE:
    add("japanese", s)
for s in KOREAN:
    add("korean", s)
for s in OTHER_SCRIPTS:
    add("other scripts", s)
for s in CODE:
    add("code", s)
for s in EMOJI:
    add("emoji", s)
for s in SPECIAL:
    add("special tokens in text", s)

# ---- digit runs ----
for n in range(1, 41):
    add("digits", "".join(str((i * 7 + n) % 10) for i in range(n)))
for n in (1, 2, 3, 4, 5, 6, 7, 9, 10, 16, 33, 100):
    d = "".join(str(rng.randrange(10)) for _ in range(n))
    add("digits", f"x{d}y {d}.{d} -{d} {d[:3]},{d[3:6]},{d[6:]} v{d}")
add("digits", "１２３４５６７８９０ fullwidth")
add("digits", "٠١٢٣٤٥٦٧٨٩ ۰۱۲۳۴۵۶۷۸۹ ०१२३४५६७८९ ০১২৩৪৫৬৭৮৯ ๐๑๒๓๔๕๖๗๘๙")
add("digits", "²³¹¼½¾ ⁰⁴⁵ ₀₁₂ ①②③ ⅠⅡⅢⅣ ⅰⅱⅲ 〇一二三")
add("digits", "3.14159265358979323846264338327950288419716939937510582097494459")
add("digits", "0000000000000000000000000000000000")
add("digits", "1 22 333 4444 55555 666666 7777777 88888888 999999999")
add("digits", "phone +1 (555) 123-4567, +86 138 0013 8000, +44 20 7946 0958")
add("digits", "IP 192.168.1.1, IPv6 2001:0db8:85a3:0000:0000:8a2e:0370:7334, MAC 00:1A:2B:3C:4D:5E")
add("digits", "1234567890" * 10)
add("digits", "𝟎𝟏𝟐𝟑 𝟘𝟙𝟚 (math digits) 𑁦𑁧 𖩠𖩡 (other digits) 𞥐𞥑")

# ---- whitespace runs ----
for n in (1, 2, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 64, 100, 257):
    add("whitespace", "a" + " " * n + "b")
    add("whitespace", " " * n)
for n in (1, 2, 3, 5, 10, 40):
    add("whitespace", "x" + "\n" * n + "y")
    add("whitespace", "x" + "\t" * n + "y")
    add("whitespace", "x" + "\r\n" * n + "y")
    add("whitespace", "x" + " \n" * n + "y")
    add("whitespace", "x" + "\n " * n + "y")
    add("whitespace", "x" + "\u3000" * n + "y")
    add("whitespace", "x" + "\u00a0" * n + "y")
add("whitespace", "   \t\t\t   \n\n\n   \r\r\r   \x0b\x0c   ")
add("whitespace", "word \u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a word")
add("whitespace", "line\u2028sep\u2029para\u0085nel\u180emvs\u200bzwsp\ufeffbom")
add("whitespace", "a\u180e\nb \u180e c\u180e\u180e d")
add("whitespace", "\u1680ogham\u202fnarrow\u205fmedium")
add("whitespace", " " * 1000)
add("whitespace", ("\t \n" * 200))
add("whitespace", "end with spaces     ")
add("whitespace", "     start with spaces")
add("whitespace", "\n\n\nnewlines first")

# ---- control characters ----
for c in list(range(0, 32)) + [127]:
    add("control", f"a{chr(c)}b {chr(c)}{chr(c)} {chr(c)}")
for c in range(0x80, 0xA0):
    add("control", f"c1 {chr(c)}x{chr(c)}")
add("control", "".join(chr(c) for c in range(32)))
add("control", "bidi \u202ertl\u202c \u2066iso\u2069 \u200e\u200f zwj\u200dzwnj\u200c")
add("control", "soft\u00adhyphen word\u2060joiner tag\U000E0041\U000E007F")
add("control", "nul\x00in\x00the\x00middle")

# ---- mixed scripts ----
MIX_PIECES = ENGLISH[:12] + CHINESE[:10] + JAPANESE[:6] + KOREAN[:4] + OTHER_SCRIPTS[:10] + EMOJI[:6] + CODE[:6]
for i in range(240):
    k = rng.randrange(2, 5)
    parts = [rng.choice(MIX_PIECES) for _ in range(k)]
    sep = rng.choice(["", " ", "\n", "  ", "\t", "，", "/"])
    add("mixed", sep.join(parts))
for i in range(120):
    words = []
    for _ in range(rng.randrange(3, 12)):
        src = rng.choice(MIX_PIECES)
        a = rng.randrange(len(src))
        words.append(src[a:a + rng.randrange(1, 12)])
    add("mixed", rng.choice(["", " "]).join(words))

# ---- random code points over all of Unicode 16 ----
try:
    import unicodedata2 as ud  # Unicode 16.0 when run from regen.sh's venv
except ImportError:  # the corpus only needs assignment data; stdlib works for most of it
    ud = unicodedata
assigned = [cp for cp in range(0x110000)
            if not (0xD800 <= cp <= 0xDFFF) and ud.category(chr(cp)) not in ("Cn", "Cs")]
new_in_15_16 = [cp for cp in assigned if unicodedata.category(chr(cp)) == "Cn"]
contexts = ["{c}", "a{c}b", " {c}", "{c} ", "{c}{c}", "1{c}2", "x {c}y", "{c}\n", "'{c}s", "你{c}好"]
for i in range(500):
    pool = new_in_15_16 if i % 4 == 0 else assigned
    cps = [rng.choice(pool) for _ in range(rng.randrange(1, 6))]
    text = "".join(rng.choice(contexts).format(c=chr(cp)) for cp in cps)
    add("random code points", text)
# every category neighbourhood once: letters, marks, numbers, punctuation, symbols, separators
by_cat = {}
for cp in assigned:
    by_cat.setdefault(ud.category(chr(cp)), []).append(cp)
for cat in sorted(by_cat):
    cps = by_cat[cat]
    for j in range(6):
        sample = [rng.choice(cps) for _ in range(8)]
        add("categories", f"{cat}: " + " ".join(chr(c) + chr(rng.choice(cps)) for c in sample))

# ---- random bytes (mostly ill-formed UTF-8) ----
INVALID = [
    b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xed\xa0\x80",
    b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\x80", b"\xbf", b"\xc2",
    b"\xe4\xbd", b"\xf0\x9f\x98", b"\xf0\x9f", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1",
    b"\xe2\x82\x28", b"\xf0\x28\x8c\xbc", b"\xf0\x90\x28\xbc", b"\xf8\xa1\xa1\xa1\xa1",
    b"\xfc\xa1\xa1\xa1\xa1\xa1", b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xef\xbf\xbe", b"\xef\xbf\xbf",
]
for bad in INVALID:
    add("invalid utf-8", b"ok " + bad + b" ok")
    add("invalid utf-8", bad + bad + b"x" + bad)
for i in range(150):
    n = rng.randrange(1, 40)
    if i % 3 == 0:
        raw = bytes(rng.randrange(256) for _ in range(n))
    else:
        pieces = []
        for _ in range(rng.randrange(1, 8)):
            r = rng.random()
            if r < 0.3:
                pieces.append(rng.choice(INVALID))
            elif r < 0.6:
                pieces.append(rng.choice(MIX_PIECES)[: rng.randrange(1, 20)].encode())
            else:
                pieces.append(chr(rng.choice(assigned)).encode()[: rng.randrange(1, 5)])
        raw = b"".join(pieces)
    add("invalid utf-8", raw)

# ---- long lines ----
for i in range(20):
    add("long", " ".join(rng.choice(MIX_PIECES) for _ in range(40)))
add("long", "a" * 3000)
add("long", "ab" * 2000)
add("long", "的" * 1500)
add("long", "!" * 2000)
add("long", "😀" * 500)
add("long", "x" * 500 + " " * 500 + "y" * 500)

# ---- fill to >= 2000 with sentence shuffles ----
ALL = ENGLISH + CHINESE + JAPANESE + KOREAN + OTHER_SCRIPTS + CODE + EMOJI
while len(cases) < 2100:
    s = rng.choice(ALL)
    cut = rng.randrange(len(s) + 1)
    add("fill", s[cut:] + rng.choice(["", " ", "\n", "\n\n", "  "]) + rng.choice(ALL)[:cut])


def escape(b):
    out = []
    i = 0
    while i < len(b):
        c = b[i]
        if c == 0x5C:
            out.append("\\\\")
            i += 1
        elif c == 0x0A:
            out.append("\\n")
            i += 1
        elif c == 0x0D:
            out.append("\\r")
            i += 1
        elif c == 0x09:
            out.append("\\t")
            i += 1
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\x{c:02X}")
            i += 1
        elif c < 0x80:
            out.append(chr(c))
            i += 1
        else:
            # take one well-formed UTF-8 sequence literally, escape anything else
            for k in (4, 3, 2):
                seg = b[i:i + k]
                if len(seg) == k:
                    try:
                        ch = seg.decode("utf-8")
                    except UnicodeDecodeError:
                        continue
                    if len(ch) == 1 and ch not in "\u2028\u2029\u0085":
                        out.append(ch)
                        i += k
                        break
            else:
                out.append(f"\\x{c:02X}")
                i += 1
    return "".join(out)


with open(OUT, "w", encoding="utf-8", newline="\n") as f:
    f.write("# tokenizer corpus: one escaped case per line (see tools/reference/tokenizer/make_corpus.py)\n")
    section = None
    for sec, b in cases:
        if sec != section:
            f.write(f"# {sec}\n")
            section = sec
        line = escape(b)
        if line.startswith("#"):
            line = "\\x23" + line[1:]
        f.write(line + "\n")
print(OUT, len(cases), "cases")
