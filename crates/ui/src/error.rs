//! What can go wrong on a page, and how each is shown: a redirect to the
//! login or password page, or an error page saying what happened.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

use crate::view;

/// A page's failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UiError {
    /// No session, or it expired or was revoked.
    #[error("not signed in")]
    SignedOut,
    /// The user must change their password before anything else.
    #[error("the password must be changed first")]
    MustChangePassword,
    /// A form posted without this session's CSRF token.
    #[error("this form was not sent from a Drover page of this session (its CSRF token is missing or wrong); reload the page and try again")]
    Csrf,
    /// The API refused or failed; its own message.
    #[error("{message}")]
    Api {
        /// The API's HTTP status.
        status: u16,
        /// Its `metav1.Status` message.
        message: String,
    },
    /// A form value the UI itself refuses.
    #[error("{0}")]
    BadRequest(String),
    /// Something the UI does not show.
    #[error("{0}")]
    NotFound(String),
    /// Something that should not happen.
    #[error("{0}")]
    Internal(String),
}

impl UiError {
    /// From an API answer: its status and `metav1.Status` body.
    pub(crate) fn from_api(status: StatusCode, body: &Value) -> Self {
        let message = body["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned()
            });
        match status.as_u16() {
            401 => UiError::SignedOut,
            403 if message.contains("must change their password") => UiError::MustChangePassword,
            code => UiError::Api {
                status: code,
                message,
            },
        }
    }

    /// The HTTP status of the error page.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            UiError::SignedOut => StatusCode::UNAUTHORIZED,
            UiError::MustChangePassword | UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::Api { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            // A stale cookie goes, or the sign-in page would send the
            // browser straight back here.
            UiError::SignedOut => (
                [(
                    axum::http::header::SET_COOKIE,
                    crate::session::clear_cookie(crate::session::SESSION_COOKIE),
                )],
                Redirect::to("/dashboard/login"),
            )
                .into_response(),
            UiError::MustChangePassword => {
                Redirect::to("/dashboard/password?forced=1").into_response()
            }
            other => {
                if matches!(other, UiError::Internal(_)) {
                    tracing::error!(error = %other, "UI page failed");
                }
                let status = other.status();
                let title = match status.as_u16() {
                    403 => "Not allowed",
                    404 => "Not found",
                    400 | 422 => "Not accepted",
                    409 => "Conflict",
                    _ => "Something went wrong",
                };
                (status, view::error_page(title, &other.to_string())).into_response()
            }
        }
    }
}
