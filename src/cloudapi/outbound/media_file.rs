//! Meta's limits on a media file itself: the types and sizes each kind takes, checked on the
//! file's declared type and its magic bytes, and the limits of Meta's upload endpoint. The
//! gateway checks a downloaded file with them before uploading it; the emulator refuses an
//! upload with them as Meta does.

use super::content::MediaKind;

/// A static sticker (an animated one may be [`MediaKind::max_bytes`], 500 KB).
pub const MAX_STATIC_STICKER_BYTES: u64 = 100 * 1024;

/// The type an Ogg Opus file is uploaded as: WhatsApp plays it as a voice note.
pub const VOICE_NOTE_TYPE: &str = "audio/ogg; codecs=opus";

/// Types that name no type: the bytes decide.
const UNNAMED: &[&str] = &["", "application/octet-stream", "binary/octet-stream"];

/// Why a file cannot be sent as a kind of media.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("{kind} files may be at most {max} bytes; this one is {size} bytes or more")]
    TooLarge {
        kind: &'static str,
        size: u64,
        max: u64,
    },
    #[error("the file is {got}; Meta takes {kind} files as {accepted}")]
    WrongType {
        kind: &'static str,
        got: String,
        accepted: String,
    },
    #[error("the file is served as {declared}, but its bytes are not {what} ({looks})")]
    Mismatch {
        declared: String,
        what: &'static str,
        looks: String,
    },
    #[error("the file is empty")]
    Empty,
}

/// The essence of a Content-Type, lowercased: `image/jpeg` of `Image/JPEG; q=1`.
pub fn essence(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}

/// Why Meta's upload endpoint (`POST /{phone-number-id}/media`) refuses a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadRefused {
    /// No kind of media takes the type (the type, as Meta names it back).
    Type(String),
    /// The type is taken, the file is not (too large, or its bytes are another format).
    File(FileError),
}

/// Every type Meta's upload endpoint takes, in Meta's order of kinds.
pub fn upload_types() -> Vec<&'static str> {
    MediaKind::ALL
        .into_iter()
        .flat_map(|k| k.mime_types().iter().copied())
        .collect()
}

/// Whether Meta's upload endpoint takes `bytes` declared as `content_type`: a type some kind
/// takes, the bytes of that type, and the kind's size (WebP is a sticker's type).
pub fn check_upload(content_type: &str, bytes: &[u8]) -> Result<(), UploadRefused> {
    let mime = essence(content_type);
    let Some(kind) = MediaKind::ALL.into_iter().find(|k| accepts(*k, &mime)) else {
        return Err(UploadRefused::Type(mime));
    };
    check_file(kind, Some(&mime), bytes)
        .map(drop)
        .map_err(UploadRefused::File)
}

fn accepts(kind: MediaKind, mime: &str) -> bool {
    kind.mime_types().contains(&mime)
}

/// What the bytes of a type start with, when that is cheap to tell: the name of the format
/// and whether `bytes` are it. `None`: nothing to check (plain text).
fn signature(mime: &str, bytes: &[u8]) -> Option<(&'static str, bool)> {
    use infer::{audio, image};
    let iso_media = bytes.get(4..8) == Some(b"ftyp");
    let ole = bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]);
    let zip = bytes.starts_with(b"PK\x03\x04");
    Some(match mime {
        "image/jpeg" => ("JPEG", image::is_jpeg(bytes)),
        "image/png" => ("PNG", image::is_png(bytes)),
        "image/webp" => ("WebP", bytes.starts_with(b"RIFF") && image::is_webp(bytes)),
        "video/mp4" | "video/3gpp" | "audio/mp4" => ("ISO media (MP4, 3GPP, M4A)", iso_media),
        "audio/aac" => ("AAC", audio::is_aac(bytes) || bytes.starts_with(b"ADIF")),
        "audio/amr" => ("AMR", bytes.starts_with(b"#!AMR")),
        // ID3 tags, or an MPEG audio frame's 11 sync bits.
        "audio/mpeg" => (
            "MP3",
            bytes.starts_with(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] >= 0xE0),
        ),
        // Meta plays Ogg with the Opus codec only.
        "audio/ogg" | "audio/opus" => ("Ogg Opus", audio::is_ogg_opus(bytes)),
        "application/pdf" => ("PDF", bytes.starts_with(b"%PDF-")),
        "application/msword" | "application/vnd.ms-excel" | "application/vnd.ms-powerpoint" => {
            ("an Office 97-2003 file", ole)
        }
        m if m.starts_with("application/vnd.openxmlformats-officedocument.") => {
            ("an Office Open XML file", zip)
        }
        _ => return None,
    })
}

/// The type `bytes` are, among the types `kind` takes, when their host named none.
fn sniff(kind: MediaKind, bytes: &[u8]) -> Option<&'static str> {
    if bytes.get(4..8) == Some(b"ftyp") {
        let brand = bytes.get(8..10);
        return match kind {
            MediaKind::Video if brand == Some(b"3g") => Some("video/3gpp"),
            MediaKind::Video => Some("video/mp4"),
            MediaKind::Audio => Some("audio/mp4"),
            _ => None,
        };
    }
    // Office files share their containers: only the host's type tells them apart.
    let telling = |m: &str| !m.starts_with("application/vnd") && m != "application/msword";
    kind.mime_types()
        .iter()
        .copied()
        .filter(|m| telling(m))
        .find(|m| signature(m, bytes).is_some_and(|(_, is)| is))
}

/// What `bytes` look like, for an error: the type `infer` recognises, or a word for text.
fn looks_like(bytes: &[u8]) -> String {
    match infer::get(bytes) {
        Some(t) => format!("it looks like {}", t.mime_type()),
        None if infer::text::is_html(bytes) => "it looks like text/html".to_owned(),
        None => "its format is not recognised".to_owned(),
    }
}

/// Whether a WebP file is animated (its VP8X header's animation flag).
fn animated_webp(bytes: &[u8]) -> bool {
    bytes.get(12..16) == Some(b"VP8X") && bytes.get(20).is_some_and(|flags| flags & 0x02 != 0)
}

/// Checks the file `bytes`, whose host named its type `declared` (the Content-Type), as a
/// `kind` of media: Meta's types for the kind, the bytes matching the type, and Meta's size
/// limit. Returns the type to upload it as.
pub fn check_file(
    kind: MediaKind,
    declared: Option<&str>,
    bytes: &[u8],
) -> Result<String, FileError> {
    let name = kind.as_str();
    if bytes.is_empty() {
        return Err(FileError::Empty);
    }
    let size = bytes.len() as u64;
    let max = match kind {
        MediaKind::Sticker if !animated_webp(bytes) => MAX_STATIC_STICKER_BYTES,
        _ => kind.max_bytes(),
    };
    if size > max {
        return Err(FileError::TooLarge {
            kind: name,
            size,
            max,
        });
    }
    let declared = declared
        .map(essence)
        .filter(|d| !UNNAMED.contains(&d.as_str()));
    let mime = match declared {
        Some(d) => d,
        None => match sniff(kind, bytes) {
            Some(m) => m.to_owned(),
            None => {
                return Err(FileError::WrongType {
                    kind: name,
                    got: format!("of no named type ({})", looks_like(bytes)),
                    accepted: kind.mime_types().join(", "),
                });
            }
        },
    };
    if !accepts(kind, &mime) {
        return Err(FileError::WrongType {
            kind: name,
            got: mime,
            accepted: kind.mime_types().join(", "),
        });
    }
    if let Some((what, false)) = signature(&mime, bytes) {
        return Err(FileError::Mismatch {
            declared: mime,
            what,
            looks: looks_like(bytes),
        });
    }
    Ok(match mime.as_str() {
        "audio/ogg" | "audio/opus" => VOICE_NOTE_TYPE.to_owned(),
        _ => mime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F'];
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    fn webp(animated: bool, size: usize) -> Vec<u8> {
        let mut b = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0".to_vec();
        b.push(if animated { 0x02 } else { 0 });
        b.resize(size, 0);
        b
    }

    fn ogg(codec: &[u8; 8]) -> Vec<u8> {
        let mut b = b"OggS".to_vec();
        b.resize(28, 0);
        b.extend_from_slice(codec);
        b
    }

    #[test]
    fn files_meta_takes_get_their_upload_type() {
        let mp4 = b"\0\0\0\x18ftypisom\0\0\x02\0";
        let gpp = b"\0\0\0\x18ftyp3gp4\0\0\x02\0";
        for (kind, declared, bytes, want) in [
            (
                MediaKind::Image,
                Some("image/jpeg"),
                JPEG.to_vec(),
                "image/jpeg",
            ),
            (
                MediaKind::Image,
                Some("IMAGE/PNG; charset=x"),
                PNG.to_vec(),
                "image/png",
            ),
            (MediaKind::Image, None, PNG.to_vec(), "image/png"),
            (
                MediaKind::Image,
                Some("application/octet-stream"),
                JPEG.to_vec(),
                "image/jpeg",
            ),
            (MediaKind::Video, None, gpp.to_vec(), "video/3gpp"),
            (
                MediaKind::Video,
                Some("video/mp4"),
                mp4.to_vec(),
                "video/mp4",
            ),
            (
                MediaKind::Audio,
                Some("audio/ogg"),
                ogg(b"OpusHead"),
                VOICE_NOTE_TYPE,
            ),
            (MediaKind::Audio, None, ogg(b"OpusHead"), VOICE_NOTE_TYPE),
            (
                MediaKind::Audio,
                Some("audio/mpeg"),
                b"ID3\x04\0".to_vec(),
                "audio/mpeg",
            ),
            (
                MediaKind::Audio,
                Some("audio/mpeg"),
                vec![0xFF, 0xF3, 0x44],
                "audio/mpeg",
            ),
            (
                MediaKind::Document,
                Some("application/pdf"),
                b"%PDF-1.7".to_vec(),
                "application/pdf",
            ),
            (
                MediaKind::Document,
                None,
                b"%PDF-1.7".to_vec(),
                "application/pdf",
            ),
            (
                MediaKind::Document,
                Some("text/plain"),
                b"hello".to_vec(),
                "text/plain",
            ),
            (
                MediaKind::Sticker,
                Some("image/webp"),
                webp(false, 50_000),
                "image/webp",
            ),
            (
                MediaKind::Sticker,
                Some("image/webp"),
                webp(true, 400_000),
                "image/webp",
            ),
        ] {
            assert_eq!(
                check_file(kind, declared, &bytes).as_deref(),
                Ok(want),
                "{kind:?} {declared:?}"
            );
        }
    }

    #[test]
    fn files_meta_refuses_say_why() {
        let html = b"<!DOCTYPE html><html><body>Not found</body></html>";
        let big_jpeg = {
            let mut b = JPEG.to_vec();
            b.resize(6 * 1024 * 1024, 0);
            b
        };
        for (kind, declared, bytes, says) in [
            (
                MediaKind::Image,
                Some("text/html"),
                html.to_vec(),
                "the file is text/html; Meta takes image files as image/jpeg, image/png",
            ),
            (
                MediaKind::Image,
                Some("image/jpeg"),
                html.to_vec(),
                "served as image/jpeg, but its bytes are not JPEG (it looks like text/html)",
            ),
            (
                MediaKind::Image,
                Some("image/jpeg"),
                PNG.to_vec(),
                "not JPEG (it looks like image/png)",
            ),
            (
                MediaKind::Image,
                None,
                b"plain words".to_vec(),
                "of no named type (its format is not recognised)",
            ),
            (
                MediaKind::Image,
                Some("image/gif"),
                b"GIF89a".to_vec(),
                "the file is image/gif",
            ),
            (
                MediaKind::Image,
                Some("image/jpeg"),
                big_jpeg,
                "image files may be at most 5242880 bytes; this one is 6291456",
            ),
            (
                MediaKind::Audio,
                Some("audio/ogg"),
                ogg(b"\x01vorbis\0"),
                "not Ogg Opus",
            ),
            (
                MediaKind::Sticker,
                Some("image/webp"),
                webp(false, 200_000),
                "sticker files may be at most 102400 bytes",
            ),
            (
                MediaKind::Sticker,
                Some("image/png"),
                PNG.to_vec(),
                "Meta takes sticker files as image/webp",
            ),
            (
                MediaKind::Document,
                Some("application/zip"),
                b"PK\x03\x04".to_vec(),
                "the file is application/zip",
            ),
            (
                MediaKind::Video,
                Some("video/mp4"),
                Vec::new(),
                "the file is empty",
            ),
        ] {
            let err = check_file(kind, declared, &bytes).unwrap_err().to_string();
            assert!(err.contains(says), "{kind:?} {declared:?}: {err}");
        }
    }

    #[test]
    fn uploads_are_checked_by_their_declared_type() {
        assert_eq!(check_upload("image/jpeg", JPEG), Ok(()));
        assert_eq!(
            check_upload("audio/ogg; codecs=opus", &ogg(b"OpusHead")),
            Ok(())
        );
        assert_eq!(
            check_upload("text/html", b"<html>"),
            Err(UploadRefused::Type("text/html".into()))
        );
        assert!(matches!(
            check_upload("image/webp", &webp(false, 200_000)),
            Err(UploadRefused::File(FileError::TooLarge {
                max: 102_400,
                ..
            }))
        ));
        assert!(matches!(
            check_upload("image/png", JPEG),
            Err(UploadRefused::File(FileError::Mismatch { .. }))
        ));
        assert!(upload_types().contains(&"video/3gpp"));
    }
}
