//! Opt-out and resume keywords: decides whether a customer's whole message is a STOP or START
//! keyword. Pure: it does not record the opt-out or send the confirmation.
//!
//! # What counts as a match
//!
//! A message matches a keyword when both are equal after this folding, applied to the message
//! and (once, at construction) to every configured keyword:
//!
//! 1. **Width and compatibility forms** (Unicode NFKC): full-width `ＳＴＯＰ` is `STOP`, `ﬁ` is
//!    `fi`, a no-break or ideographic space is a space.
//! 2. **Case** (full case folding): `Stop`, `STOP` and `stop` are equal; `ß` and `ẞ` equal
//!    `ss` (`ABBESTELLEN`/`abbeſtellen`), Greek final `ς` equals `σ`, and Turkish `İ`/`ı`
//!    equal `i`.
//! 3. **Accents on Latin, Greek and Cyrillic letters**: `ARRÊT` equals `arret`, `désabonner`
//!    equals `DESABONNER`, `ё` equals `е` (and `й` equals `и`). Combining marks on other
//!    scripts are kept, because there they are part of the letter: `रोकें` does not match `रोके`,
//!    `إيقاف` does not match `ايقاف` (both are default keywords). Canonically equivalent
//!    spellings still match (a precomposed `إ` or `क़` equals `ا`+hamza below or `क`+nukta).
//! 4. **Invisible characters** are ignored: zero-width space/joiner/non-joiner, soft hyphen,
//!    byte-order mark, direction marks and the Arabic tatweel (`تـوقف` is `توقف`).
//! 5. **Surroundings**: leading and trailing whitespace, punctuation, symbols and emoji are
//!    dropped — everything up to the first and after the last letter or digit, e.g. `STOP!`,
//!    `stop.`, `"stop"`, `¡Baja!`, `«arrêt»`, `STOP 🛑`, `रोकें।` (danda), `توقف؟`, `退订。`.
//! 6. **Inner whitespace**: any run of whitespace inside counts as one space (`opt   out`
//!    matches `OPT OUT`). Inner punctuation is kept: `opt-out` does not match `OPT OUT`.
//!
//! Nothing else matches: the message must be the keyword alone, so `please stop messaging me`,
//! `stop it now`, `stopping`, `non-stop` and `STOP2` do not opt out. When a keyword is both a
//! stop and a resume keyword, stop wins. Keywords that fold to nothing (empty, or only
//! punctuation) are ignored. With `opt_out.enabled: false` nothing matches.

use crate::config::policy::OptOut;
use std::collections::HashMap;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_segmentation::UnicodeSegmentation;

/// Whether a keyword stops or resumes messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeywordKind {
    /// The customer opts out.
    Stop,
    /// The customer opts back in.
    Resume,
}

/// A message that is a keyword.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeywordHit {
    /// Stop or resume.
    pub kind: KeywordKind,
    /// The keyword as configured (not folded), e.g. `ARRET` for a message `«arrêt»`.
    pub keyword: String,
}

/// Matches whole messages against the configured keywords, folded once at construction.
#[derive(Clone, Debug, Default)]
pub struct KeywordMatcher {
    by_folded: HashMap<String, KeywordHit>,
}

impl KeywordMatcher {
    /// A matcher for `opt_out`'s keywords; empty (matches nothing) when opt-out is disabled.
    pub fn new(opt_out: &OptOut) -> Self {
        let mut by_folded = HashMap::new();
        if !opt_out.enabled {
            return Self { by_folded };
        }
        // Stop keywords are inserted last so they win a conflict: failing to honour an opt-out
        // is a compliance problem, a missed resume is not.
        let lists = [
            (KeywordKind::Resume, &opt_out.resume_keywords),
            (KeywordKind::Stop, &opt_out.keywords),
        ];
        for (kind, list) in lists {
            for keyword in list {
                let folded = fold(keyword);
                if folded.is_empty() {
                    continue;
                }
                let hit = KeywordHit {
                    kind,
                    keyword: keyword.clone(),
                };
                match by_folded.get(&folded) {
                    // Within one kind, the first spelling configured is the one reported.
                    Some(KeywordHit { kind: k, .. }) if *k == kind => {}
                    _ => {
                        by_folded.insert(folded, hit);
                    }
                }
            }
        }
        Self { by_folded }
    }

    /// The keyword `text` is, if the whole message is one (see the module doc for "is").
    pub fn classify(&self, text: &str) -> Option<KeywordHit> {
        if self.by_folded.is_empty() {
            return None;
        }
        self.by_folded.get(&fold(text)).cloned()
    }
}

/// Folds `text` as keyword matching does (module doc, steps 1–6); `""` when nothing is left.
pub fn fold(text: &str) -> String {
    if text.is_ascii() {
        fold_ascii(text)
    } else {
        fold_unicode(text)
    }
}

/// [`fold`] for ASCII text, the common case, without the three normalisation passes: ASCII is
/// its own NFKC, NFD and NFC form, holds no ignorable or combining character, and each of its
/// characters is a grapheme cluster of its own (except CR LF, which is whitespace either way).
fn fold_ascii(text: &str) -> String {
    let bytes = text.as_bytes();
    let Some(first) = bytes.iter().position(u8::is_ascii_alphanumeric) else {
        return String::new();
    };
    let last = bytes
        .iter()
        .rposition(u8::is_ascii_alphanumeric)
        .unwrap_or(first);
    let mut out = String::with_capacity(last + 1 - first);
    for word in text[first..=last].split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
    }
    out
}

fn fold_unicode(text: &str) -> String {
    // Steps 1, 2 and 4: compatibility forms, case, invisible characters.
    let mut cased = String::with_capacity(text.len());
    for c in text.nfkc() {
        match c {
            'ß' | 'ẞ' => cased.push_str("ss"),
            'ς' => cased.push('σ'),
            'ı' => cased.push('i'),
            c if is_ignorable(c) => {}
            c => cased.extend(c.to_lowercase()),
        }
    }
    // Step 3: drop marks attached to Latin, Greek or Cyrillic letters only, then recompose so
    // that canonically equivalent spellings in other scripts come out identical.
    let mut base_strips_marks = false;
    let stripped: String = cased
        .nfd()
        .filter(|&c| {
            if is_combining_mark(c) {
                !base_strips_marks
            } else {
                base_strips_marks = is_latin_greek_cyrillic(c);
                true
            }
        })
        .nfc()
        .collect();
    // Step 5: trim whole grapheme clusters, so an emoji's variation selector or skin tone goes
    // with it while a Devanagari matra stays with its consonant.
    let graphemes: Vec<&str> = stripped.graphemes(true).collect();
    // A mark with no base of its own (after a trimmed symbol, or at the start) is not a word,
    // whether or not a symbol precedes it.
    let is_word = |g: &&str| {
        g.chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() && !is_combining_mark(c))
    };
    let Some(first) = graphemes.iter().position(is_word) else {
        return String::new();
    };
    let last = graphemes.iter().rposition(is_word).unwrap_or(first);
    // Step 6: collapse inner whitespace.
    let core = graphemes[first..=last].concat();
    core.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Format characters people paste or keyboards insert without meaning to change the word.
fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' // soft hyphen
            | '\u{061C}' // Arabic letter mark
            | '\u{0640}' // Arabic tatweel (kashida), a stretching of the line
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}' // zero-width space, ZWNJ, ZWJ, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}' // byte-order mark
    )
}

/// Letters of the scripts whose combining marks are accents rather than parts of the letter.
fn is_latin_greek_cyrillic(c: char) -> bool {
    matches!(c,
        'A'..='Z' | 'a'..='z'
        | '\u{00C0}'..='\u{024F}' // Latin-1 letters, Latin Extended-A and -B
        | '\u{1E00}'..='\u{1EFF}' // Latin Extended Additional (Vietnamese)
        | '\u{2C60}'..='\u{2C7F}' | '\u{A720}'..='\u{A7FF}' | '\u{AB30}'..='\u{AB6F}'
        | '\u{0370}'..='\u{03FF}' | '\u{1F00}'..='\u{1FFF}' // Greek
        | '\u{0400}'..='\u{052F}' | '\u{1C80}'..='\u{1C8F}' // Cyrillic
        | '\u{2DE0}'..='\u{2DFF}' | '\u{A640}'..='\u{A69F}'
    ) && c.is_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matcher() -> KeywordMatcher {
        KeywordMatcher::new(&OptOut::default())
    }

    fn hit(kind: KeywordKind, keyword: &str) -> Option<KeywordHit> {
        Some(KeywordHit {
            kind,
            keyword: keyword.to_owned(),
        })
    }

    #[test]
    fn stop_keywords_match_in_every_spelling() {
        use KeywordKind::Stop;
        let m = matcher();
        let cases: &[(&str, &str)] = &[
            ("STOP", "STOP"),
            ("stop", "STOP"),
            ("Stop", "STOP"),
            ("ＳＴＯＰ", "STOP"),
            ("STOP!", "STOP"),
            ("stop.", "STOP"),
            ("stop 🛑", "STOP"),
            ("STOP ❤️", "STOP"),
            ("  Stop  ", "STOP"),
            ("\"stop\"", "STOP"),
            ("\u{200B}stop\u{FEFF}", "STOP"),
            // A stray mark with nothing to sit on is trimmed, with or without a symbol before it.
            ("!\u{093E}stop", "STOP"),
            ("\u{093E}रोकें", "रोकें"),
            ("stop\u{00A0}all", "STOP ALL"),
            ("opt   out", "OPT OUT"),
            ("Opt\tOut!", "OPT OUT"),
            ("¡Baja!", "BAJA"),
            ("«arrêt»", "ARRET"),
            ("ARRÊT", "ARRET"),
            ("arret", "ARRET"),
            ("Désabonner", "DESABONNER"),
            ("Cancelar inscrição", "CANCELAR INSCRICAO"),
            ("Cancelar suscripción", "CANCELAR SUSCRIPCION"),
            ("abmelden", "ABMELDEN"),
            ("STOPP", "STOPP"),
            ("रोकें", "रोकें"),
            ("रोकें।", "रोकें"),
            ("रोको!!", "रोको"),
            ("बंद  करो", "बंद करो"),
            ("توقف", "توقف"),
            ("توقف؟", "توقف"),
            ("تـوقـف", "توقف"),
            ("إيقاف", "إيقاف"),
            // The same word with alef + combining hamza below (canonically equivalent).
            ("\u{0627}\u{0655}يقاف", "إيقاف"),
            // Without the hamza it is a keyword of its own, not a spelling of the one above.
            ("ايقاف", "ايقاف"),
            ("ايقاف!", "ايقاف"),
            ("OPT-OUT", "OPT-OUT"),
            ("opt-out.", "OPT-OUT"),
            ("退订", "退订"),
            ("退订。", "退订"),
            ("取消订阅！", "取消订阅"),
            ("СТОП", "СТОП"),
            ("стоп", "СТОП"),
            ("Отписка.", "ОТПИСКА"),
            ("BERHENTI", "BERHENTI"),
            ("berhenti langganan", "BERHENTI LANGGANAN"),
        ];
        for &(text, keyword) in cases {
            assert_eq!(m.classify(text), hit(Stop, keyword), "{text:?}");
        }
    }

    #[test]
    fn resume_keywords_match() {
        use KeywordKind::Resume;
        let m = matcher();
        let cases: &[(&str, &str)] = &[
            ("START", "START"),
            ("start!", "START"),
            ("Start 👍🏽", "START"),
            ("शुरू करें", "शुरू करें"),
            ("शुरू", "शुरू"),
            ("ابدأ", "ابدأ"),
            ("开始", "开始"),
            ("старт", "СТАРТ"),
            ("Reprendre.", "REPRENDRE"),
        ];
        for &(text, keyword) in cases {
            assert_eq!(m.classify(text), hit(Resume, keyword), "{text:?}");
        }
    }

    #[test]
    fn other_messages_do_not_match() {
        let m = matcher();
        for text in [
            "",
            "   ",
            "!!!",
            "🛑",
            "please stop messaging me",
            "stop it now",
            "stopping",
            "non-stop",
            "STOP2",
            "STOP²",
            "s t o p",
            "stop stop",
            "रोके",
            "रोक",
            "退",
            "hello",
        ] {
            assert_eq!(m.classify(text), None, "{text:?}");
        }
    }

    #[test]
    fn folding_handles_case_edge_cases() {
        assert_eq!(fold("STRASSE"), fold("Straße"));
        assert_eq!(fold("ẞ"), "ss");
        assert_eq!(fold("ΌΧΙ"), "οχι");
        assert_eq!(fold("ΣΟΣ"), fold("σος"));
        assert_eq!(fold("İPTAL"), "iptal");
        assert_eq!(fold("ıptal"), "iptal");
        assert_eq!(fold("Ёлка"), "елка");
        assert_eq!(fold("ＳＴＯＰ"), "stop");
        // Devanagari: matras and nukta kept; precomposed and decomposed nukta letters agree.
        assert_eq!(fold("रोकें"), "रोकें");
        assert_eq!(fold("\u{095B}रा"), fold("\u{091C}\u{093C}रा"));
        assert_ne!(fold("\u{095B}रा"), fold("\u{091C}रा"));
    }

    #[test]
    fn custom_keywords_conflicts_and_disabled() {
        let mut o = OptOut {
            keywords: vec!["Halt".into(), "HALT".into(), "".into(), "!!".into()],
            resume_keywords: vec!["halt".into(), "go on".into(), "ज़रूर".into()],
            ..OptOut::default()
        };
        let m = KeywordMatcher::new(&o);
        // Stop wins the conflict; the first stop spelling is reported.
        assert_eq!(m.classify("halt!"), hit(KeywordKind::Stop, "Halt"));
        assert_eq!(m.classify("Go On"), hit(KeywordKind::Resume, "go on"));
        // Decomposed nukta spelling of the configured precomposed keyword.
        assert_eq!(
            m.classify("\u{091C}\u{093C}रूर"),
            hit(KeywordKind::Resume, "ज़रूर")
        );
        assert_eq!(m.classify(""), None);
        assert_eq!(m.classify("!!"), None);
        assert_eq!(m.classify("stop"), None, "only configured keywords match");
        o.enabled = false;
        assert_eq!(KeywordMatcher::new(&o).classify("halt"), None);
    }

    const SURROUNDINGS: &[&str] = &[
        " ",
        "  ",
        "\t",
        "\n",
        "\u{00A0}",
        "\u{3000}",
        "!",
        "!!",
        ".",
        "?",
        "¡",
        "¿",
        "«",
        "»",
        "\"",
        "'",
        "“",
        "”",
        "(",
        ")",
        "*",
        "-",
        "…",
        "🛑",
        "❤️",
        "👍🏽",
        "👨‍👩‍👧",
        "🇪🇸",
        "。",
        "！",
        "।",
        "॥",
        "؟",
        "،",
    ];

    fn surroundings() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(SURROUNDINGS), 0..4)
            .prop_map(|parts| parts.concat())
    }

    fn message() -> impl Strategy<Value = String> {
        let keywords: Vec<&'static str> = crate::config::policy::DEFAULT_STOP_KEYWORDS
            .iter()
            .chain(crate::config::policy::DEFAULT_RESUME_KEYWORDS)
            .copied()
            .chain(["stop it", "arrêt", "ＳＴＯＰ", "stop2", "रोके"])
            .collect();
        prop_oneof![
            proptest::sample::select(keywords).prop_map(str::to_owned),
            "\\PC{0,12}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn classify_never_panics(text in any::<String>()) {
            let _ = matcher().classify(&text);
        }

        #[test]
        fn the_ascii_fold_is_the_unicode_fold(text in "[\\x00-\\x7f]{0,40}") {
            prop_assert_eq!(fold_ascii(&text), fold_unicode(&text));
        }

        #[test]
        fn the_ascii_fold_is_the_unicode_fold_around_whitespace(
            text in "[aZ9 \\t\\n\\x0b\\x0c\\r!.-]{0,24}",
        ) {
            prop_assert_eq!(fold_ascii(&text), fold_unicode(&text));
        }

        #[test]
        fn surroundings_never_change_the_result(
            text in message(),
            before in surroundings(),
            after in surroundings(),
        ) {
            let m = matcher();
            let wrapped = format!("{before}{text}{after}");
            prop_assert_eq!(m.classify(&wrapped), m.classify(&text));
        }
    }
}
