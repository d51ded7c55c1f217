//! `Range: bytes=…` (RFC 9110 §14.1.2, one range only) and the
//! `Content-Range` that answers it.

use axum::http::HeaderValue;

/// A single `bytes=` range against `size`: `Ok(None)` for no header,
/// `Err(())` for an unsatisfiable or malformed one (416), otherwise the
/// half-open `start..end`.
#[allow(clippy::result_unit_err)]
pub fn parse(value: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = value else { return Ok(None) };
    let spec = value
        .to_str()
        .map_err(|_| ())?
        .strip_prefix("bytes=")
        .ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            (a, b.saturating_add(1).min(size))
        }
    };
    if start >= end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `Content-Range` of a part: `bytes START-LAST/SIZE`.
pub fn content_range(start: u64, end: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", end - 1)
}

/// `Content-Range` of a 416: `bytes */SIZE`.
pub fn unsatisfied(size: u64) -> String {
    format!("bytes */{size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s: &str| parse(Some(&HeaderValue::from_str(s).unwrap()), 100);
        assert_eq!(parse(None, 100), Ok(None));
        assert_eq!(r("bytes=0-9"), Ok(Some((0, 10))));
        assert_eq!(r("bytes=90-"), Ok(Some((90, 100))));
        assert_eq!(r("bytes=-5"), Ok(Some((95, 100))));
        assert_eq!(r("bytes=95-1000"), Ok(Some((95, 100))));
        assert!(r("bytes=100-").is_err());
        assert!(r("bytes=5-4").is_err());
        assert!(r("bytes=0-1,5-6").is_err());
        assert!(r("items=0-1").is_err());
        assert!(r("bytes=x-1").is_err());
        assert_eq!(content_range(90, 100, 100), "bytes 90-99/100");
        assert_eq!(unsatisfied(100), "bytes */100");
    }
}
