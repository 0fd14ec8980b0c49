//! Opt-out matching: folding is stable (folding twice changes nothing), and a message matches
//! the default keywords exactly when its folded form equals a folded keyword.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use wa_gateway::config::OptOut;
use wa_gateway::policy::KeywordMatcher;
use wa_gateway::policy::optout::fold;

static MATCHER: LazyLock<KeywordMatcher> =
    LazyLock::new(|| KeywordMatcher::new(&OptOut::default()));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let folded = fold(text);
    assert_eq!(fold(&folded), folded, "folding {text:?} twice changed it");
    let hit = MATCHER.classify(text);
    if folded.is_empty() {
        assert!(hit.is_none(), "{text:?} folds to nothing but matched");
    }
    if let Some(hit) = hit {
        assert_eq!(fold(&hit.keyword), folded, "{text:?} matched {hit:?}");
    }
});
