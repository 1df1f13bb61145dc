//! A multipart/form-data scanner for the audio uploads (`/v1/audio/transcriptions` and
//! `/translations`): it finds the boundary, walks the parts, and says where the `model` field's
//! value sits, so that an attempt rewrites those bytes and nothing else.
//!
//! It never copies or decodes a part's content (the audio file goes upstream byte for byte, as
//! slices of the one body read), never rebuilds the body, and never accepts a body it could not
//! walk to its closing boundary: a malformed upload is a 400 that names what is wrong.

use memchr::memmem;

use super::body::Peek;
use super::respond::ApiError;
use smol_str::SmolStr;

/// One part of a form: its field name, whether it is a file, and its content's byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    /// Byte range of the content in the body.
    pub span: (usize, usize),
}

/// What is wrong with an upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("Content-Type must be multipart/form-data with a boundary")]
    NotMultipart,
    #[error("the multipart body does not start with its boundary")]
    NoOpeningBoundary,
    #[error("multipart part {0} has no header end (a blank line)")]
    UnterminatedHeaders(usize),
    #[error("multipart part {0} has no Content-Disposition: form-data with a name")]
    NoName(usize),
    #[error("multipart field {0} is not closed by the boundary (the body is cut short)")]
    Unterminated(String),
    #[error("multipart field {0} is missing")]
    Missing(&'static str),
    #[error("multipart field {0} must be UTF-8 text")]
    NotText(&'static str),
}

impl MultipartError {
    /// The client's 400, with the field named in `param` where there is one.
    pub fn to_api(&self) -> ApiError {
        let code = match self {
            MultipartError::Missing("model") => "missing_model",
            MultipartError::NotText("model") => "invalid_model",
            _ => "invalid_multipart",
        };
        let mut e = ApiError::invalid_request(code, self.to_string());
        e.param = match self {
            MultipartError::Missing(f) | MultipartError::NotText(f) => Some((*f).to_string()),
            MultipartError::Unterminated(f) => Some(f.clone()),
            MultipartError::NotMultipart
            | MultipartError::NoOpeningBoundary
            | MultipartError::UnterminatedHeaders(_)
            | MultipartError::NoName(_) => None,
        };
        e
    }
}

/// The boundary of a `multipart/form-data` Content-Type (quoted or not).
pub fn boundary(content_type: &str) -> Result<&str, MultipartError> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::NotMultipart);
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or(MultipartError::NotMultipart)
}

/// Every part of `body`, in order. Content is located, never copied.
pub fn parts(body: &[u8], boundary: &str) -> Result<Vec<Part>, MultipartError> {
    let dash = format!("--{boundary}");
    // Each part's content ends at CRLF + the delimiter.
    let delimiter = format!("\r\n--{boundary}");
    let finder = memmem::Finder::new(delimiter.as_bytes());
    // The first delimiter may open the body with no CRLF before it (RFC 2046: a preamble is
    // allowed; it is ignored).
    let mut at = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        finder
            .find(body)
            .map(|i| i + delimiter.len())
            .ok_or(MultipartError::NoOpeningBoundary)?
    };
    let mut out = Vec::new();
    loop {
        // After a delimiter: `--` closes the body, else the line ends and a part follows.
        if body[at..].starts_with(b"--") {
            return Ok(out);
        }
        let line_end = memmem::find(&body[at..], b"\r\n")
            .ok_or(MultipartError::UnterminatedHeaders(out.len()))?;
        let headers_start = at + line_end + 2;
        let index = out.len();
        let (headers, content_start) = if body[headers_start..].starts_with(b"\r\n") {
            (&body[headers_start..headers_start], headers_start + 2)
        } else {
            let end = memmem::find(&body[headers_start..], b"\r\n\r\n")
                .ok_or(MultipartError::UnterminatedHeaders(index))?;
            (
                &body[headers_start..headers_start + end],
                headers_start + end + 4,
            )
        };
        let (name, filename, content_type) =
            part_headers(headers).ok_or(MultipartError::NoName(index))?;
        let content_end = finder
            .find(&body[content_start..])
            .map(|i| content_start + i)
            .ok_or_else(|| MultipartError::Unterminated(name.clone()))?;
        out.push(Part {
            name,
            filename,
            content_type,
            span: (content_start, content_end),
        });
        at = content_end + delimiter.len();
    }
}

/// The name, file name and content type from a part's header block.
fn part_headers(block: &[u8]) -> Option<(String, Option<String>, Option<String>)> {
    let text = String::from_utf8_lossy(block);
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in text.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k.eq_ignore_ascii_case("content-type") {
            content_type = Some(v.trim().to_string());
        } else if k.eq_ignore_ascii_case("content-disposition") {
            let mut params = v.split(';');
            if !params
                .next()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("form-data"))
            {
                return None;
            }
            for p in params {
                let Some((pk, pv)) = p.split_once('=') else {
                    continue;
                };
                let value = unquote(pv.trim());
                match pk.trim().to_ascii_lowercase().as_str() {
                    "name" => name = Some(value),
                    "filename" => filename = Some(value),
                    _ => {}
                }
            }
        }
    }
    Some((name.filter(|n| !n.is_empty())?, filename, content_type))
}

/// A parameter value without its quotes and backslash escapes.
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// The routing fields of an audio upload: `model` (its content span is what an attempt
/// rewrites), `stream` and the presence of `file`. The upload is walked once, to its end.
pub fn peek(content_type: Option<&str>, body: &[u8]) -> Result<Peek, MultipartError> {
    let b = boundary(content_type.unwrap_or(""))?;
    let parts = parts(body, b)?;
    let model = parts
        .iter()
        .find(|p| p.name == "model" && p.filename.is_none())
        .ok_or(MultipartError::Missing("model"))?;
    let text = |p: &Part| std::str::from_utf8(&body[p.span.0..p.span.1]).ok();
    let name = text(model).ok_or(MultipartError::NotText("model"))?;
    if name.trim().is_empty() {
        return Err(MultipartError::Missing("model"));
    }
    if !parts.iter().any(|p| p.name == "file") {
        return Err(MultipartError::Missing("file"));
    }
    let stream = parts
        .iter()
        .find(|p| p.name == "stream")
        .and_then(text)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("true"));
    Ok(Peek {
        model: SmolStr::new(name.trim()),
        stream,
        provider: None,
        model_span: model.span,
    })
}

/// A text field's value (`response_format`, `language`, ...), for the mock provider.
pub fn field<'a>(body: &'a [u8], parts: &[Part], name: &str) -> Option<&'a str> {
    let p = parts
        .iter()
        .find(|p| p.name == name && p.filename.is_none())?;
    std::str::from_utf8(&body[p.span.0..p.span.1])
        .ok()
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, file, content) in parts {
            b.extend_from_slice(b"--XyZ\r\n");
            match file {
                Some(f) => b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
                ),
                None => b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            b.extend_from_slice(content);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--XyZ--\r\n");
        b
    }

    #[test]
    fn the_model_span_is_its_value_and_the_file_is_located_not_copied() {
        let audio: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let body = form(&[
            ("file", Some("a.wav"), &audio),
            ("model", None, b"whisper-fast"),
            ("stream", None, b"false"),
        ]);
        let p = peek(Some(CT), &body).unwrap();
        assert_eq!(p.model, "whisper-fast");
        assert_eq!(&body[p.model_span.0..p.model_span.1], b"whisper-fast");
        assert!(!p.stream);
        let parts = parts(&body, "XyZ").unwrap();
        assert_eq!(parts[0].filename.as_deref(), Some("a.wav"));
        assert_eq!(&body[parts[0].span.0..parts[0].span.1], &audio[..]);
    }

    #[test]
    fn a_file_containing_crlf_and_dashes_is_not_cut() {
        let audio = b"\r\n--XY\r\n--Xy\r\n--XyY-- not a delimiter\r\n".to_vec();
        let body = form(&[("model", None, b"m"), ("file", Some("f"), &audio)]);
        let parts = parts(&body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&body[parts[1].span.0..parts[1].span.1], &audio[..]);
    }

    #[test]
    fn a_quoted_boundary_and_a_preamble() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\"; charset=utf-8"),
            Ok("a b")
        );
        let mut body = b"preamble\r\n".to_vec();
        body.extend(form(&[("model", None, b"m"), ("file", Some("f"), b"x")]));
        assert_eq!(peek(Some(CT), &body).unwrap().model, "m");
    }

    #[test]
    fn malformed_uploads_name_the_problem() {
        assert_eq!(
            peek(Some("application/json"), b"{}").unwrap_err(),
            MultipartError::NotMultipart
        );
        assert_eq!(
            peek(Some("multipart/form-data"), b"").unwrap_err(),
            MultipartError::NotMultipart
        );
        assert_eq!(
            peek(Some(CT), b"garbage").unwrap_err(),
            MultipartError::NoOpeningBoundary
        );
        let body = form(&[("file", Some("f"), b"x")]);
        let e = peek(Some(CT), &body).unwrap_err();
        assert_eq!(e, MultipartError::Missing("model"));
        assert_eq!(e.to_api().code, "missing_model");
        let body = form(&[("model", None, b"m")]);
        let e = peek(Some(CT), &body).unwrap_err();
        assert_eq!(e.to_api().param.as_deref(), Some("file"));
        let mut cut = form(&[("model", None, b"m"), ("file", Some("f"), b"xxxx")]);
        cut.truncate(cut.len() - 12);
        assert_eq!(
            peek(Some(CT), &cut).unwrap_err(),
            MultipartError::Unterminated("file".into())
        );
        let body = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--".to_vec();
        assert_eq!(
            peek(Some(CT), &body).unwrap_err(),
            MultipartError::NoName(0)
        );
        let body = form(&[("model", None, b"\xff\xfe"), ("file", Some("f"), b"x")]);
        assert_eq!(
            peek(Some(CT), &body).unwrap_err(),
            MultipartError::NotText("model")
        );
    }
}
