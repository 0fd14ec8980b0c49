//! Table-driven and property tests for reply shaping: conversion cases, cuts that must not break
//! graphemes, spans, URLs or code blocks, and invariants over arbitrary text.

use super::*;
use proptest::prelude::*;
use unicode_segmentation::UnicodeSegmentation;

const CONVERSIONS: &[(&str, &str, &str)] = &[
    (
        "styles",
        "**b** __b__ *i* _i_ ~~s~~ `c`",
        "*b* *b* _i_ _i_ ~s~ `c`",
    ),
    ("bold italic", "***x***", "*_x_*"),
    ("italic in bold", "**a *b* c**", "*a _b_ c*"),
    ("bold in italic", "*a **b** c*", "_a *b* c_"),
    ("bold in bold", "**a __b__ c**", "*a b c*"),
    ("spaces move outside", "x **&#32;a&#32;** y", "x  *a*  y"),
    ("span across a break", "**a\nb**", "*a*\n*b*"),
    (
        "bold link",
        "**see [docs](https://e.com/a_b)**",
        "*see docs (https://e.com/a_b)*",
    ),
    (
        "link text is url",
        "[https://e.com](https://e.com)",
        "https://e.com",
    ),
    ("autolink", "<https://e.com/x>", "https://e.com/x"),
    (
        "image",
        "![a cat](https://e.com/cat.png)",
        "a cat (https://e.com/cat.png)",
    ),
    (
        "code keeps markers",
        "```py\nx = 2*3*4  # _no_\n**kw**\n```",
        "```\nx = 2*3*4  # _no_\n**kw**\n```",
    ),
    (
        "indented code",
        "    let a = *p;\n",
        "```\nlet a = *p;\n```",
    ),
    (
        "lists 3 deep",
        "- a\n  - b\n    - c\n- d",
        "- a\n  - b\n    - c\n- d",
    ),
    (
        "ordered start",
        "3. three\n4. four\n   1. sub",
        "3. three\n4. four\n  1. sub",
    ),
    ("loose list", "- a\n\n- b", "- a\n- b"),
    (
        "heading then list",
        "## Steps\n- one\n- two",
        "*Steps*\n\n- one\n- two",
    ),
    (
        "heading with bold",
        "# Hello **world** *now*",
        "*Hello world _now_*",
    ),
    ("quote", "> a\nb\n\n> > c", "> a\n> b\n\n> > c"),
    (
        "table",
        "| a | b |\n|---|---|\n| 1 | **2** |",
        "a | b\n1 | *2*",
    ),
    ("rule", "one\n\n---\n\n\n\ntwo", "one\n\ntwo"),
    ("breaks", "a  \nb\\\nc\nd", "a\nb\nc\nd"),
    (
        "html",
        "<b>x</b> y\n\n<div>\nz\n</div>",
        "<b>x</b> y\n\n<div>\nz\n</div>",
    ),
    ("plain markers", "2\\*3\\*4", "2*3*4"),
    (
        "arabic",
        "**مرحبا** بالعالم\n\n- نعم",
        "*مرحبا* بالعالم\n\n- نعم",
    ),
    ("hebrew", "# שלום\n*עולם* טוב", "*שלום*\n\n_עולם_ טוב"),
    ("emoji", "**👩🏽‍💻 done** 👨‍👩‍👧‍👦", "*👩🏽‍💻 done* 👨‍👩‍👧‍👦"),
    ("blank", "  \n\n", ""),
];

#[test]
fn converts_markdown_to_whatsapp() {
    for (name, markdown, want) in CONVERSIONS {
        assert_eq!(to_whatsapp(markdown), *want, "case {name}: {markdown:?}");
    }
}

#[test]
fn output_has_no_trailing_spaces_or_double_blank_lines() {
    let out = to_whatsapp("a   \n\n\n\n- b  \n\n\n```\nc   \n\n\n\nd\n```\n\n> e  ");
    assert!(out.lines().all(|l| l == l.trim_end()), "{out:?}");
    assert!(!out.contains("\n\n\n"), "{out:?}");
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The input's non-whitespace characters; backticks are dropped when the text holds a fence,
/// because a split code block gains fences.
fn essence(s: &str, fenced: bool) -> String {
    s.chars()
        .filter(|c| !(c.is_whitespace() || (fenced && *c == '`')))
        .collect()
}

fn assert_parts(text: &str, max: usize, parts: &[String]) {
    for part in parts {
        assert!(!part.trim().is_empty(), "empty part in {parts:?}");
        assert!(chars(part) <= max, "{} > {max}: {part:?}", chars(part));
    }
    let fenced = text.contains("```");
    assert_eq!(
        essence(&parts.concat(), fenced),
        essence(text, fenced),
        "{parts:?}"
    );
}

/// Whether every formatting marker in the part closes: fences pair up, and outside code each
/// line holds an even number of `*`, `_`, `~` and `` ` ``.
fn balanced(part: &str) -> bool {
    let pieces: Vec<&str> = part.split("```").collect();
    pieces.len() % 2 == 1
        && pieces
            .iter()
            .step_by(2)
            .flat_map(|p| p.lines())
            .all(|line| {
                ['*', '_', '~', '`']
                    .iter()
                    .all(|m| line.matches(*m).count() % 2 == 0)
            })
}

#[test]
fn prefers_paragraphs_then_sentences_then_words() {
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "one two three.\n\nfour five six",
            24,
            &["one two three.", "four five six"],
        ),
        (
            "one two three. four five six",
            20,
            &["one two three.", "four five six"],
        ),
        // A sentence end in the first half of a part would waste the part; a word end wins.
        (
            "one two. three four five six",
            20,
            &["one two. three four", "five six"],
        ),
        (
            "one two three four five",
            16,
            &["one two three", "four five"],
        ),
        (
            "short\n\nthen a rather long sentence. ok",
            30,
            &["short\n\nthen a rather long", "sentence. ok"],
        ),
    ];
    for (text, max, want) in cases {
        assert_eq!(split(text, *max), *want, "{text:?} at {max}");
    }
}

#[test]
fn keeps_spans_and_urls_whole() {
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "aa *bold span here* tail",
            16,
            &["aa", "*bold span here*", "tail"],
        ),
        (
            "see _it is ~very~ nice_ x",
            20,
            &["see", "_it is ~very~ nice_", "x"],
        ),
        (
            "code `a b c d e f` yes",
            16,
            &["code", "`a b c d e f`", "yes"],
        ),
        (
            "go to https://e.com/x_y_z now",
            22,
            &["go to", "https://e.com/x_y_z", "now"],
        ),
        // `_` inside a URL opens no span, so the cut after the URL is free.
        (
            "see https://example.com/_a now_ more",
            30,
            &["see https://example.com/_a", "now_ more"],
        ),
        (
            "https://example.com/aaaaaaaaaaaaaaaaaaaa",
            30,
            &["https://example.com/aaaaaaaaaa", "aaaaaaaaaa"],
        ),
    ];
    for (text, max, want) in cases {
        assert_eq!(split(text, *max), *want, "{text:?} at {max}");
    }
}

#[test]
fn url_at_the_split_point_moves_whole_to_the_next_part() {
    let url = "https://example.com/docs/setup";
    let text = format!("{} {url} end", "word ".repeat(815).trim_end());
    let parts = split(&text, MAX_TEXT_CHARS);
    assert!(chars(&text[..text.find(url).unwrap()]) < MAX_TEXT_CHARS);
    assert!(chars(&text[..text.find(url).unwrap() + url.len()]) > MAX_TEXT_CHARS);
    assert_eq!(parts.len(), 2);
    assert!(
        parts[0].ends_with("word"),
        "{:?}",
        &parts[0][parts[0].len() - 20..]
    );
    assert!(parts[1].starts_with(url));
    assert!(has_url(&parts[1]) && !has_url(&parts[0]));
}

#[test]
fn emoji_sequences_are_never_cut() {
    for emoji in ["👩🏽‍💻", "👨‍👩‍👧‍👦", "🇫🇷"] {
        let text = emoji.repeat(40);
        for max in [16, 17, 23, 50] {
            let parts = split(&text, max);
            assert_parts(&text, max, &parts);
            for part in &parts {
                assert!(
                    part.graphemes(true).all(|g| g == emoji),
                    "{emoji} cut at {max}"
                );
            }
        }
    }
}

#[test]
fn right_to_left_text_splits_between_words() {
    let arabic = "هذه رسالة طويلة باللغة العربية. ";
    let hebrew = "זוהי הודעה ארוכה בעברית! ";
    for sentence in [arabic, hebrew] {
        let text = to_whatsapp(&format!("**{}** {}", sentence.trim(), sentence.repeat(12)));
        let parts = split(&text, 64);
        assert_parts(&text, 64, &parts);
        let words: Vec<&str> = text.split_whitespace().collect();
        let rejoined = parts.join(" ");
        assert_eq!(rejoined.split_whitespace().collect::<Vec<_>>(), words);
        assert!(parts.iter().all(|p| balanced(p)), "{parts:?}");
    }
}

#[test]
fn split_code_block_is_closed_and_reopened() {
    let body: String = (0..30)
        .map(|i| format!("    let x_{i} = a * b;\n"))
        .collect();
    let text = format!("Intro.\n\n```\n{body}```\n\nDone.");
    let parts = split(&text, 120);
    assert_parts(&text, 120, &parts);
    assert!(parts.len() > 3);
    assert!(parts.iter().all(|p| balanced(p)), "{parts:?}");
    assert!(
        parts[2].starts_with("```\n    let x_"),
        "indentation kept: {:?}",
        parts[2]
    );
}

#[test]
fn long_reply_is_shaped_into_balanced_parts() {
    let mut markdown = String::new();
    for i in 0..40 {
        markdown.push_str(&format!(
            "## Section {i}\n\nThe gateway keeps **point {i} in bold** and _this in italics_. \
             It sends ~~old~~ new replies in order, one part after another.\n\n\
             - first item with **bold**\n- second item\n  - nested `code {i}`\n    - deeper\n\n"
        ));
        if i == 20 {
            let code: String = (0..60)
                .map(|j| format!("let v_{j} = 2 * {j}; // *keep*\n"))
                .collect();
            markdown.push_str(&format!("```rust\n{code}```\n\n"));
        }
    }
    assert!(markdown.chars().count() > 9000);
    let text = to_whatsapp(&markdown);
    let parts = shape(&markdown);
    assert!(parts.len() >= 3);
    assert_parts(&text, MAX_TEXT_CHARS, &parts);
    assert!(parts.iter().all(|p| balanced(p)), "unbalanced part");
    let words = |s: &str| {
        s.split_whitespace()
            .filter(|w| *w != "```")
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(words(&parts.join("\n")), words(&text));
}

#[test]
fn overlong_word_is_hard_cut_at_a_grapheme_boundary() {
    let word = format!("a{}a", "e\u{301}".repeat(2499));
    assert_eq!(chars(&word), 5000);
    let parts = split(&word, MAX_TEXT_CHARS);
    assert_eq!(parts.concat(), word);
    assert_eq!(
        parts.iter().map(|p| chars(p)).collect::<Vec<_>>(),
        [4095, 905]
    );
    assert!(parts[1].starts_with('e'));
}

#[test]
fn finds_urls_for_previews() {
    assert!(has_url("see https://example.com/x"));
    assert!(!has_url("no link here, just example text"));
    assert!(shape("").is_empty());
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9]{1,12}",
        "[ \n]{1,3}",
        Just("*".to_owned()),
        Just("_".to_owned()),
        Just("~".to_owned()),
        Just("`".to_owned()),
        Just("```".to_owned()),
        Just(". ".to_owned()),
        Just("👩🏽‍💻".to_owned()),
        Just("e\u{301}".to_owned()),
        Just("مرحبا".to_owned()),
        Just("https://example.com/a_b".to_owned()),
        Just("# ".to_owned()),
        Just("- ".to_owned()),
        Just("[x](https://e.com)".to_owned()),
    ]
}

proptest! {
    #[test]
    fn parts_fit_and_keep_every_character(text in "(?s).{0,300}", max in 16usize..80) {
        assert_parts(&text, max, &split(&text, max));
    }

    #[test]
    fn formatted_parts_fit_and_keep_every_character(
        tokens in prop::collection::vec(token(), 0..120),
        max in 16usize..120,
    ) {
        let text = tokens.concat();
        assert_parts(&text, max, &split(&text, max));
        let converted = to_whatsapp(&text);
        assert_parts(&converted, max, &split(&converted, max));
    }

    #[test]
    fn plain_text_skips_the_parser_and_comes_out_the_same(
        text in "[A-Za-z0-9 ,.:;?'!/@%-]{0,80}",
    ) {
        prop_assert_eq!(to_whatsapp(&text), markdown::convert(&text));
    }

    #[test]
    fn short_ascii_skips_the_layout_and_comes_out_the_same(
        text in "[ -~\\t\\n\\r\\x0b\\x0c]{0,40}",
        max in 16usize..48,
    ) {
        prop_assert_eq!(split(&text, max), split::by_layout(&text, max));
    }

    #[test]
    fn has_url_agrees_with_the_link_finder(
        text in "(www\\.|https?:?/?/?|mailto:?|[a-z.@/ -]){0,12}",
    ) {
        prop_assert_eq!(has_url(&text), finds_url(&text));
    }

    #[test]
    fn conversion_never_panics(markdown in "(?s).{0,300}") {
        let out = to_whatsapp(&markdown);
        prop_assert!(!out.contains("\n\n\n"));
    }
}

#[test]
fn a_reply_past_max_parts_is_cut_with_an_ellipsis_within_the_limit() {
    let part = |c: char| c.to_string().repeat(MAX_TEXT_CHARS);
    let mut parts: Vec<String> = ['a', 'b', 'c'].into_iter().map(part).collect();
    assert!(!limit_parts(&mut parts, 3), "three parts fit in three");
    assert!(limit_parts(&mut parts, 2));
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0], part('a'));
    assert!(
        parts[1].ends_with("b…"),
        "{}",
        &parts[1][parts[1].len() - 8..]
    );
    assert_eq!(parts[1].chars().count(), MAX_TEXT_CHARS);
    // A short last part keeps all of itself; trailing whitespace gives way to the ellipsis.
    let mut short = vec!["one ".to_owned(), "two".to_owned()];
    assert!(limit_parts(&mut short, 1));
    assert_eq!(short, ["one…"]);
    // An emoji sequence at the cut is dropped whole, never split.
    let family = "👨‍👩‍👧";
    let mut emoji = vec![
        format!("{}{family}", "x".repeat(MAX_TEXT_CHARS - 5)),
        "y".into(),
    ];
    assert!(limit_parts(&mut emoji, 1));
    assert_eq!(emoji[0], format!("{}…", "x".repeat(MAX_TEXT_CHARS - 5)));
    // Zero means one: a reply is never dropped whole.
    let mut zero = vec!["a".to_owned(), "b".to_owned()];
    assert!(limit_parts(&mut zero, 0));
    assert_eq!(zero, ["a…"]);
}

#[test]
fn nul_characters_never_reach_a_part() {
    assert_eq!(shape("he\0llo\0"), ["hello"]);
    assert!(shape("\0\0").is_empty());
}
