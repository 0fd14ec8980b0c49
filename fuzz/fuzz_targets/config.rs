//! Config load and validate on arbitrary text: every outcome is a config or diagnostics with
//! positions inside the text, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wa_gateway::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, Path::new("fuzz.yaml")) {
        Ok(cfg) => {
            let _ = config::summary(&cfg);
        }
        Err(e) => {
            // YAML's line breaks: LF, CRLF and a lone CR (editors count a lone CR too).
            let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
            for d in &e.diagnostics {
                assert!(d.line <= lines + 1, "{d:?} is past the end ({lines} lines)");
                assert!(!d.message.is_empty());
            }
        }
    }
});
