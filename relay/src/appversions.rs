//! `/shared/vendor/deltachat/appversions`: the newest Delta Chat versions the relay recommends
//! (chatmail.md §6.1). The operator may replace the default (`appversions.json` next to this
//! file, compiled in) with `<data_dir>/appversions.json`, read when the relay starts (a new
//! file takes effect at the next start). The value is compact one-line JSON, kept in
//! [`Shared`](crate::shared::Shared) for the IMAP sessions.
//!
//! Delta Chat core parses the value into typed structs and drops the whole payload when one
//! value has the wrong type, so a file that does not have the schema (`clients[]` with
//! `clientId` and `sources[]` of `sourceId`, `versionInteger` (u32), `versionString`,
//! `downloadUrl`) is not served: the entry is NIL and a warning logged, as the reference
//! answers an unreadable file.

use std::path::Path;

use serde_json::Value;

/// The compiled-in default.
const DEFAULT: &str = include_str!("appversions.json");
/// Largest file read.
const MAX_FILE: u64 = 64 * 1024;
/// Name of the operator's file in the data directory.
pub const FILE_NAME: &str = "appversions.json";

/// The entry's value: the operator's file if there is one, else the default; `None` if the
/// file is unreadable or does not have the schema.
pub fn value(data_dir: &Path) -> Option<Vec<u8>> {
    let path = data_dir.join(FILE_NAME);
    let text = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT.as_bytes().to_vec(),
        Ok(m) if m.len() > MAX_FILE => {
            tracing::warn!(path = %path.display(), "appversions file larger than 64 KiB, not served");
            return None;
        }
        _ => match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %path.display(), "appversions file unreadable: {e}");
                return None;
            }
        },
    };
    match compact(&text) {
        Ok(v) => Some(v),
        Err(why) => {
            tracing::warn!(path = %path.display(), "appversions file not served: {why}");
            None
        }
    }
}

/// The JSON in one line, after checking the schema.
fn compact(text: &[u8]) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    check(&v)?;
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

fn check(v: &Value) -> Result<(), String> {
    let nonempty_str = |v: Option<&Value>, what: &str| match v.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(format!("{what} is not a non-empty string")),
    };
    let clients = v
        .get("clients")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("no clients list")?;
    for c in clients {
        nonempty_str(c.get("clientId"), "clientId")?;
        let sources = c
            .get("sources")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .ok_or("a client without sources")?;
        for s in sources {
            nonempty_str(s.get("sourceId"), "sourceId")?;
            nonempty_str(s.get("versionString"), "versionString")?;
            nonempty_str(s.get("downloadUrl"), "downloadUrl")?;
            s.get("versionInteger")
                .and_then(Value::as_u64)
                .filter(|n| u32::try_from(*n).is_ok())
                .ok_or("versionInteger is not a u32")?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_operator_file_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let v = value(dir.path()).unwrap();
        assert!(!v.contains(&b'\n'), "one line");
        let parsed: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(parsed["clients"][0]["clientId"], "deltachat");
        assert_eq!(parsed["clients"][0]["sources"][0]["versionInteger"], 754);
        let mine = r#"{"clients": [{"clientId": "deltachat", "sources": [
            {"sourceId": "fdroid", "versionInteger": 760, "versionString": "2.60.0",
             "downloadUrl": "https://download.delta.chat/x.apk"}]}]}"#;
        std::fs::write(dir.path().join(FILE_NAME), mine).unwrap();
        assert_eq!(
            value(dir.path()).unwrap(),
            br#"{"clients":[{"clientId":"deltachat","sources":[{"downloadUrl":"https://download.delta.chat/x.apk","sourceId":"fdroid","versionInteger":760,"versionString":"2.60.0"}]}]}"#
        );
        for bad in [
            "not json",
            r#"{"clients": []}"#,
            r#"{"clients": [{"clientId": "x", "sources": [{"sourceId": "s", "versionInteger": "7", "versionString": "1", "downloadUrl": "u"}]}]}"#,
            r#"{"clients": [{"clientId": "x", "sources": [{"sourceId": "s", "versionInteger": 4294967296, "versionString": "1", "downloadUrl": "u"}]}]}"#,
        ] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert_eq!(value(dir.path()), None, "{bad}");
        }
        std::fs::write(dir.path().join(FILE_NAME), vec![b' '; 70 * 1024]).unwrap();
        assert_eq!(value(dir.path()), None);
    }
}
