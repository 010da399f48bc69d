//! The page frame and the small pieces pages share. Everything is built
//! with maud, which escapes every interpolated string: a user-chosen name
//! is always text, never markup.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use crate::session::{Session, CSRF_FIELD};

/// Which top-level section a page belongs to (marked in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Clusters,
    Users,
    Tokens,
    Settings,
}

/// A page for a signed-in user.
pub(crate) fn page(title: &str, session: &Session, section: Section, main: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            li { a href=(href) aria-current=[(section == this).then_some("page")] { (label) } }
        }
    };
    frame(
        title,
        html! {
            header.top {
                a.brand href="/dashboard/clusters" { "Drover" }
                nav aria-label="Main" {
                    ul {
                        (link("/dashboard/clusters", "Clusters", Section::Clusters))
                        @if session.rules.allows("list", "management.drover.io", "users") {
                            (link("/dashboard/users", "Users", Section::Users))
                        }
                        (link("/dashboard/tokens", "API keys", Section::Tokens))
                        (link("/dashboard/settings", "Settings", Section::Settings))
                    }
                }
                form.search method="get" action="/dashboard/search" role="search" {
                    label.sr for="site-search" { "Search clusters, projects and namespaces" }
                    input #site-search name="q" type="search" placeholder="Search ( / )" autocomplete="off";
                }
                form.signout method="post" action="/dashboard/logout" data-native {
                    (csrf(session))
                    span.who { "Signed in as " strong { (session.user) } }
                    button type="submit" { "Sign out" }
                }
            }
            main #main tabindex="-1" { (main) }
        },
    )
}

/// A page without navigation (sign-in, errors).
pub(crate) fn bare(title: &str, main: Markup) -> Markup {
    frame(
        title,
        html! {
            header.top { a.brand href="/dashboard/clusters" { "Drover" } }
            main #main.narrow tabindex="-1" { (main) }
        },
    )
}

fn frame(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Drover" }
                link rel="icon" href="/dashboard/static/icon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/dashboard/static/app.css";
                script src="/dashboard/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                (body)
            }
        }
    }
}

/// An error page, with the sections' links (who is signed in is not known
/// here). A form sent from a page in the background (`app.js`) shows its
/// message beside the form instead, the input kept.
pub(crate) fn error_page(title: &str, message: &str) -> Markup {
    frame(
        title,
        html! {
            header.top {
                a.brand href="/dashboard/clusters" { "Drover" }
                nav aria-label="Main" { ul {
                    li { a href="/dashboard/clusters" { "Clusters" } }
                    li { a href="/dashboard/tokens" { "API keys" } }
                    li { a href="/dashboard/settings" { "Settings" } }
                } }
            }
            main #main.narrow tabindex="-1" data-error-page {
                h1 { (title) }
                p.error #error-message role="alert" { (message) }
                p { a href="/dashboard/clusters" { "Back to the clusters" } }
            }
        },
    )
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// A notice above a page's content (after an action).
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(t) = text {
            p.notice role="status" { (t) }
        }
    }
}

/// A cluster state as a badge.
pub(crate) fn badge(state: &str) -> Markup {
    let class = match state {
        "Active" => "badge active",
        "Unavailable" => "badge unavailable",
        _ => "badge pending",
    };
    html! { span class=(class) data-state=(state) { (state) } }
}

/// A delete's confirmation: the form posting to `action` only once `name`
/// is typed (the handler checks it again), and a way back to `cancel`.
pub(crate) fn confirm_delete(
    session: &Session,
    action: &str,
    name: &str,
    button: &str,
    cancel: &str,
) -> Markup {
    html! {
        form method="post" action=(action) {
            (csrf(session))
            div.field {
                label for="confirm" { "Type " strong { (name) } " to confirm" }
                input #confirm name="confirm" type="text" required autocomplete="off";
            }
            button.danger type="submit" { (button) }
            " "
            a href=(cancel) { "Cancel" }
        }
    }
}

/// A text field with its label.
pub(crate) fn text_field(label: &str, name: &str, required: bool) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type="text" required[required] autocomplete="off";
        }
    }
}

/// A button that copies the text of the element `target` (by id).
pub(crate) fn copy_button(target: &str, label: &str) -> Markup {
    html! { button.copy type="button" data-copy=(target) { (label) } }
}

/// CPU as cores (`40`, `1.5`).
pub(crate) fn cpu(q: Option<&str>) -> String {
    match q.and_then(drover_core::quantity::parse) {
        Some(m) if m % 1000 == 0 => (m / 1000).to_string(),
        Some(m) => format!("{:.1}", m as f64 / 1000.0),
        None => "–".into(),
    }
}

/// Memory in GiB (`160 GiB`).
pub(crate) fn memory(q: Option<&str>) -> String {
    match q.and_then(drover_core::quantity::parse) {
        Some(m) => {
            let gib = m as f64 / 1000.0 / f64::from(1u32 << 30);
            if gib >= 10.0 {
                format!("{gib:.0} GiB")
            } else {
                format!("{gib:.1} GiB")
            }
        }
        None => "–".into(),
    }
}

/// A string at a JSON pointer, or "".
pub(crate) fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A future time as people read it (`in 29d`, or `2h ago` once past), the
/// exact time on hover.
pub(crate) fn until(rfc3339: &str) -> Markup {
    let Some(at) = drover_core::meta::parse_rfc3339(rfc3339) else {
        return html! { "–" };
    };
    let text = match at.duration_since(std::time::SystemTime::now()) {
        Ok(left) => format!("in {}", drover_core::meta::human_duration(left)),
        Err(_) => format!("{} ago", drover_core::meta::age(rfc3339)),
    };
    html! { time datetime=(rfc3339) title=(rfc3339) { (text) } }
}

/// A past time as people read it (`5m ago`), the exact time on hover.
pub(crate) fn since(rfc3339: &str) -> Markup {
    if rfc3339.is_empty() {
        return html! { "–" };
    }
    html! { time datetime=(rfc3339) title=(rfc3339) { (drover_core::meta::age(rfc3339)) " ago" } }
}
