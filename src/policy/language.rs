//! A hint of the language a customer writes in (whatlang), used to pick localized system texts.
//! A hint, not a fact: short or mixed messages give none or an unreliable one.

use serde::{Deserialize, Serialize};
use whatlang::{Detector, Lang, Script};

/// The language a text seems to be written in. Agents receive it as the turn's `language`
/// (`agent::Turn`), so its fields are part of their JSON contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LanguageHint {
    /// ISO 639-1 code when the language has one (`hi`, `ar`, `es`, `zh`), else ISO 639-3.
    pub code: String,
    /// English name, e.g. `Hindi`.
    pub name: String,
    /// whatlang's confidence, 0.0 to 1.0.
    pub confidence: f64,
    /// Whether the hint is worth acting on (enough text and a clear winner); agents should
    /// ignore it otherwise.
    pub reliable: bool,
}

/// Below this many letters, a script several languages share says too little to guess from.
const MIN_LETTERS_SHARED_SCRIPT: usize = 4;
/// A hint on a shared script is only called reliable from this many letters on.
const RELIABLE_LETTERS_SHARED_SCRIPT: usize = 12;

/// The language of `text` among all whatlang knows; `None` when it has no letters (empty,
/// emoji, digits) or is too short to tell among the languages of its script ("ok", "si").
///
/// On chat-length text whatlang often confuses close languages (a plain Russian question can
/// come out as Bulgarian) and rarely reaches its "reliable" bar on Latin script; prefer
/// [`detect_among`] with the languages you have texts for.
pub fn detect(text: &str) -> Option<LanguageHint> {
    hint(text, &Detector::new())
}

/// The language of `text` among `languages` (639-1 or 639-3 codes, e.g. the keys of a
/// localized text; unknown codes such as `default` are ignored). `reliable` then means
/// "clearly this one of those". With no known code this is [`detect`].
pub fn detect_among(text: &str, languages: &[&str]) -> Option<LanguageHint> {
    let allowed: Vec<Lang> = Lang::all()
        .iter()
        .copied()
        .filter(|&lang| {
            languages
                .iter()
                .any(|&code| iso_639_1(lang) == Some(code) || lang.code() == code)
        })
        .collect();
    if allowed.is_empty() {
        return detect(text);
    }
    hint(text, &Detector::with_allowlist(allowed))
}

fn hint(text: &str, detector: &Detector) -> Option<LanguageHint> {
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    if letters == 0 {
        return None;
    }
    let info = detector.detect(text)?;
    let shared = script_is_shared(info.script());
    if shared && letters < MIN_LETTERS_SHARED_SCRIPT {
        return None;
    }
    let lang = info.lang();
    Some(LanguageHint {
        code: iso_639_1(lang).unwrap_or(lang.code()).to_owned(),
        name: lang.eng_name().to_owned(),
        confidence: info.confidence(),
        reliable: info.is_reliable() && (!shared || letters >= RELIABLE_LETTERS_SHARED_SCRIPT),
    })
}

/// Scripts whatlang maps to more than one language; the others identify the language outright.
fn script_is_shared(script: Script) -> bool {
    matches!(
        script,
        Script::Latin | Script::Cyrillic | Script::Arabic | Script::Devanagari | Script::Hebrew
    )
}

/// The two-letter code of each language whatlang knows that has one (all of them, today).
fn iso_639_1(lang: Lang) -> Option<&'static str> {
    use Lang::*;
    Some(match lang {
        Afr => "af",
        Aka => "ak",
        Amh => "am",
        Ara => "ar",
        Aze => "az",
        Bel => "be",
        Ben => "bn",
        Bul => "bg",
        Cat => "ca",
        Ces => "cs",
        Cmn => "zh",
        Dan => "da",
        Deu => "de",
        Ell => "el",
        Eng => "en",
        Epo => "eo",
        Est => "et",
        Fin => "fi",
        Fra => "fr",
        Guj => "gu",
        Heb => "he",
        Hin => "hi",
        Hrv => "hr",
        Hun => "hu",
        Hye => "hy",
        Ind => "id",
        Ita => "it",
        Jav => "jv",
        Jpn => "ja",
        Kan => "kn",
        Kat => "ka",
        Khm => "km",
        Kor => "ko",
        Lat => "la",
        Lav => "lv",
        Lit => "lt",
        Mal => "ml",
        Mar => "mr",
        Mkd => "mk",
        Mya => "my",
        Nep => "ne",
        Nld => "nl",
        Nob => "nb",
        Ori => "or",
        Pan => "pa",
        Pes => "fa",
        Pol => "pl",
        Por => "pt",
        Ron => "ro",
        Rus => "ru",
        Sin => "si",
        Slk => "sk",
        Slv => "sl",
        Sna => "sn",
        Spa => "es",
        Srp => "sr",
        Swe => "sv",
        Tam => "ta",
        Tel => "te",
        Tgl => "tl",
        Tha => "th",
        Tuk => "tk",
        Tur => "tr",
        Ukr => "uk",
        Urd => "ur",
        Uzb => "uz",
        Vie => "vi",
        Yid => "yi",
        Zul => "zu",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINDI: &str = "मुझे अपने ऑर्डर की स्थिति के बारे में जानकारी चाहिए, कृपया मदद करें";
    const ARABIC: &str = "أريد أن أعرف متى سيصل طلبي، هل يمكنك مساعدتي من فضلك";
    const SPANISH: &str = "Hola, quisiera saber cuándo llega mi pedido, por favor ayúdenme";
    const PORTUGUESE: &str = "Olá, gostaria de saber quando chega a minha encomenda, obrigado";
    const RUSSIAN: &str = "Добрый день, я хочу вернуть товар, который купил на прошлой неделе";
    const RUSSIAN_SHORT: &str = "Здравствуйте, подскажите, пожалуйста, когда придёт мой заказ";
    const CHINESE: &str = "你好，我想知道我的订单什么时候到达，谢谢";
    const ENGLISH: &str = "Hello, I would like to know when my order will arrive, thank you";

    #[test]
    fn detects_common_customer_languages() {
        let cases: &[(&str, &str, &str)] = &[
            (HINDI, "hi", "Hindi"),
            (ARABIC, "ar", "Arabic"),
            (SPANISH, "es", "Spanish"),
            (PORTUGUESE, "pt", "Portuguese"),
            (RUSSIAN, "ru", "Russian"),
            (CHINESE, "zh", "Mandarin"),
            (ENGLISH, "en", "English"),
        ];
        for &(text, code, name) in cases {
            let hint = detect(text).unwrap_or_else(|| panic!("no hint for {text:?}"));
            assert_eq!(hint.code, code, "{text:?}: {hint:?}");
            assert_eq!(hint.name, name, "{text:?}");
            assert!((0.0..=1.0).contains(&hint.confidence));
        }
        // Scripts of one language (in whatlang) and long clear text are reliable.
        for text in [HINDI, CHINESE, RUSSIAN] {
            assert!(detect(text).is_some_and(|h| h.reliable), "{text:?}");
        }
    }

    #[test]
    fn an_allowlist_settles_close_languages() {
        // Unrestricted, whatlang takes this Russian question for Bulgarian.
        assert_eq!(detect(RUSSIAN_SHORT).map(|h| h.code), Some("bg".into()));
        let ours = [
            "default", "en", "es", "pt", "ru", "ar", "hi", "zh", "fr", "de", "id",
        ];
        let cases = [
            (RUSSIAN_SHORT, "ru"),
            (ARABIC, "ar"),
            (ENGLISH, "en"),
            (SPANISH, "es"),
            (HINDI, "hi"),
        ];
        for (text, code) in cases {
            let hint = detect_among(text, &ours).unwrap_or_else(|| panic!("{text:?}"));
            assert_eq!(hint.code, code, "{text:?}: {hint:?}");
        }
        assert!(detect_among(RUSSIAN_SHORT, &ours).is_some_and(|h| h.reliable));
        // No known code: the same as detect.
        assert_eq!(detect_among(SPANISH, &["default"]), detect(SPANISH));
        assert_eq!(detect_among("ok", &ours), None);
    }

    #[test]
    fn too_little_text_gives_no_reliable_hint() {
        for text in [
            "", "   ", "👍", "🛑🛑", "123", "?!", "ok", "si", "да", "hola", "thanks",
        ] {
            let hint = detect(text);
            assert!(
                hint.as_ref().is_none_or(|h| !h.reliable),
                "{text:?}: {hint:?}"
            );
        }
        for text in ["", "👍", "123", "ok", "si"] {
            assert_eq!(detect(text), None, "{text:?}");
        }
    }

    #[test]
    fn every_whatlang_language_has_a_code() {
        for &lang in Lang::all() {
            let code = iso_639_1(lang).unwrap_or(lang.code());
            assert!(code.len() == 2 || code.len() == 3, "{lang:?}");
        }
    }
}
