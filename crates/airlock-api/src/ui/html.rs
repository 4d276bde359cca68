//! HTML for the console, written by hand: every value that came from a user (names,
//! descriptions, metadata, paths, models, error messages) goes through [`esc`], and every page
//! goes through [`layout`]. No inline script or style anywhere: the CSP forbids them.

use std::fmt::Write as _;

use super::Ui;

/// Escapes text for an HTML element's content or a double-quoted attribute value.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A JSON value as the text a table cell shows (strings without their quotes), escaped.
pub(crate) fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`, or a dash.
pub(crate) fn time(v: &serde_json::Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "—".to_owned();
    };
    let secs = ms.div_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        crate::usage::format_day(secs.div_euclid(86_400)),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A table: a header row and rows of already-escaped cells.
pub(crate) fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "<div class=\"scroll\"><table id=\"{}\"><thead><tr>",
        esc(id)
    );
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"empty\">nothing yet</td></tr>",
            head.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf_field(ui: &Ui) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&ui.csrf)
    )
}

/// A one-button form that POSTs to `action` (shown only to keys that may change things).
pub(crate) fn button(ui: &Ui, action: &str, label: &str, class: &str) -> String {
    if !ui.admin {
        return String::new();
    }
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}<button type=\"submit\" class=\"{}\">{}</button></form>",
        esc(action),
        csrf_field(ui),
        esc(class),
        esc(label)
    )
}

const NAV: [(&str, &str); 6] = [
    ("/ui/", "Overview"),
    ("/ui/gateways", "Gateways"),
    ("/ui/secrets", "Secrets"),
    ("/ui/devboxes", "Devboxes"),
    ("/ui/usage", "Usage"),
    ("/ui/audit", "Audit"),
];

/// A whole page: head, nav bar, an optional notice, the body (already escaped HTML).
pub(crate) fn layout(
    ui: Option<&Ui>,
    active: &str,
    title: &str,
    notice: &str,
    body: &str,
) -> String {
    let mut nav = String::new();
    if let Some(ui) = ui {
        nav.push_str("<nav><span class=\"brand\">Airlock</span><div class=\"links\">");
        for (href, label) in NAV {
            let current = if href == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
        }
        let _ = write!(
            nav,
            "</div><form method=\"post\" action=\"/ui/sign-out\" class=\"inline signout\">{}<span class=\"who\">{} · {}</span><button type=\"submit\" id=\"sign-out\">Sign out</button></form></nav>",
            csrf_field(ui),
            esc(&ui.caller.key.name),
            esc(ui.caller.key.scope.as_str()),
        );
    }
    let notice = if notice.is_empty() {
        String::new()
    } else {
        format!("<p class=\"notice\" id=\"notice\">{}</p>", esc(notice))
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · Airlock</title>\
<link rel=\"stylesheet\" href=\"/ui/assets/uPlot.min.css\">\
<link rel=\"stylesheet\" href=\"/ui/assets/console.css\">\
<script src=\"/ui/assets/uPlot.iife.min.js\" defer></script>\
<script src=\"/ui/assets/console.js\" defer></script>\
</head><body>{nav}<main><h1>{}</h1>{notice}{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: text as a user might write it, and how it must appear in the page.
    #[test]
    fn escaping() {
        let cases = [
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            (
                "<img src=x onerror=\"alert(1)\">",
                "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;",
            ),
            ("' onmouseover='x", "&#39; onmouseover=&#39;x"),
            ("a & b", "a &amp; b"),
            ("&lt;", "&amp;lt;"),
            ("plain-name_1", "plain-name_1"),
            ("ünïcödé 🙂", "ünïcödé 🙂"),
        ];
        for (input, want) in cases {
            assert_eq!(esc(input), want, "{input}");
            let shown = cell(&serde_json::Value::String(input.to_owned()));
            assert_eq!(shown, want, "{input}");
        }
        // A non-string value is escaped through its JSON text.
        assert_eq!(
            cell(&serde_json::json!({"k": "<b>"})),
            "{&quot;k&quot;:&quot;&lt;b&gt;&quot;}"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(&serde_json::json!(0)), "1970-01-01 00:00:00");
        assert_eq!(
            time(&serde_json::json!(1_764_936_000_123_i64)),
            "2025-12-05 12:00:00"
        );
        assert_eq!(time(&serde_json::Value::Null), "—");
    }
}
