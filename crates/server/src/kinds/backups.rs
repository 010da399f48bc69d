//! The Backup kind (`management.drover.io/v1`, cluster-scoped): where,
//! when and how many. Its checks: a valid location (an empty one becomes
//! the server's default, `file://DATA_DIR/backups`, on create; an update
//! must keep one), a cron schedule that
//! parses, a retention of 1 to 1000 files, and encryption only when the
//! server has a key. The leader's backup controller does the work and
//! writes the status. Only those holding rights on `backups` (by default,
//! admins) can create one.

use std::str::FromStr;

use drover_apiserver::{ApiError, Column, Context, FieldError, Prepared, Strategy};
use drover_core::api::{self, schema_for};
use futures::future::BoxFuture;
use serde_json::{json, Value};

/// The retention when a Backup names none.
pub const DEFAULT_RETENTION: u32 = 10;
/// The most files a Backup may keep.
pub const MAX_RETENTION: u32 = 1000;

/// Parse a Backup's cron schedule (five fields, UTC).
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    if schedule.split_whitespace().count() != 5 {
        return Err(
            "a schedule has five fields: minute hour day-of-month month day-of-week".into(),
        );
    }
    croner::Cron::from_str(schedule).map_err(|e| e.to_string())
}

/// The Backup kind's strategy.
pub struct Backups {
    /// Where a Backup without a location writes.
    pub default_location: String,
    /// Whether the server has `--backup-encryption-key-file`.
    pub has_key: bool,
}

impl Strategy for Backups {
    fn schema(&self) -> Value {
        schema_for::<api::Backup>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Location", "string", "Where the files go", "/spec/location"),
            Column::new("Schedule", "string", "Cron schedule", "/spec/schedule"),
            Column::new(
                "Last Backup",
                "string",
                "When the last backup succeeded",
                "/status/lastBackupTime",
            ),
            Column::new("State", "string", "Ready or failed", "/status/conditions"),
        ]
    }

    fn cell(&self, column: &Column, obj: &Value) -> Value {
        if column.name != "State" {
            return obj.pointer(column.pointer).cloned().unwrap_or(Value::Null);
        }
        let ready = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        Value::String(
            match ready {
                None => "Pending",
                Some(c) if c["status"] == "True" => "Ready",
                Some(_) => "Failed",
            }
            .to_owned(),
        )
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec: api::BackupSpec = match serde_json::from_value(obj["spec"].clone()) {
            Ok(spec) => spec,
            // The schema check reports the field.
            Err(_) => return errors,
        };
        // A create without a location gets the default; an update keeps one.
        if spec.location.is_empty() && old.is_some() {
            errors.push(FieldError::required(
                "spec.location",
                "file:///DIR or s3://BUCKET/PREFIX",
            ));
        }
        if !spec.location.is_empty() {
            if let Err(e) = drover_backup::location::validate(&spec.location) {
                errors.push(FieldError::invalid(
                    "spec.location",
                    spec.location.clone(),
                    e.clone(),
                ));
            }
        }
        if let Some(schedule) = &spec.schedule {
            if let Err(e) = parse_schedule(schedule) {
                errors.push(FieldError::invalid("spec.schedule", schedule.clone(), &e));
            }
        }
        if let Some(n) = spec.retention_count {
            if !(1..=MAX_RETENTION).contains(&n) {
                errors.push(FieldError::invalid(
                    "spec.retentionCount",
                    n.to_string(),
                    format!("must be between 1 and {MAX_RETENTION}"),
                ));
            }
        }
        if spec.encrypt && !self.has_key {
            errors.push(FieldError::invalid(
                "spec.encrypt",
                "true".to_owned(),
                "the server has no --backup-encryption-key-file",
            ));
        }
        errors
    }

    fn prepare_create<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            if obj
                .pointer("/spec/location")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                if !obj["spec"].is_object() {
                    obj["spec"] = json!({});
                }
                obj["spec"]["location"] = json!(self.default_location);
            }
            // The status is the controller's.
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
            Ok(Prepared::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_five_field_crons() {
        assert!(parse_schedule("* * * * *").is_ok());
        assert!(parse_schedule("0 3 * * 1-5").is_ok());
        assert!(parse_schedule("0 3 * *").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_schedule("0 0 3 * * *").is_err());
    }

    #[test]
    fn encryption_needs_a_key_and_locations_are_checked() {
        let s = Backups {
            default_location: "file:///var/lib/drover/backups".into(),
            has_key: false,
        };
        let obj = json!({"spec": {"location": "ftp://x", "encrypt": true, "retentionCount": 0}});
        let fields: Vec<String> = s
            .validate(&obj, None)
            .into_iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            fields,
            ["spec.location", "spec.retentionCount", "spec.encrypt"]
        );
    }
}
