//! The pages, one module per area.

pub(crate) mod admin;
pub(crate) mod alerts;
pub(crate) mod auth;
pub(crate) mod clusters;
pub(crate) mod members;
pub(crate) mod projects;
pub(crate) mod providers;
pub(crate) mod search;
