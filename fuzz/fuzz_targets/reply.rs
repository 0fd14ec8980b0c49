//! Markdown conversion plus splitting: any agent text becomes parts that Meta accepts (non-empty,
//! at most 4,096 characters each), and splitting loses no non-space character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_gateway::reply;

fuzz_target!(|data: &[u8]| {
    let Ok(markdown) = std::str::from_utf8(data) else {
        return;
    };
    let converted = reply::to_whatsapp(markdown);
    let parts = reply::split(&converted, reply::MAX_TEXT_CHARS);
    for p in &parts {
        assert!(!p.trim().is_empty(), "an empty part");
        assert!(
            p.chars().count() <= reply::MAX_TEXT_CHARS,
            "a part over the limit"
        );
    }
    let kept: usize = parts
        .iter()
        .map(|p| p.chars().filter(|c| !c.is_whitespace()).count())
        .sum();
    let wanted = converted.chars().filter(|c| !c.is_whitespace()).count();
    assert!(kept >= wanted, "split dropped text: {kept} < {wanted}");
    let _ = reply::has_url(markdown);
});
