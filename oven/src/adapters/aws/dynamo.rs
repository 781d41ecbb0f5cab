//! The job table on DynamoDB.
//!
//! One item per job, partition key `id` (S). Fields are attributes; `request` and `result` are
//! JSON strings. `expires_at_s` (seconds) is the table's TTL attribute; DynamoDB deletes late
//! (moto never), so reads also compare `expires_at`. Transitions are single conditional
//! `UpdateItem`s whose `ConditionExpression` is [`Transition::precondition`] written for
//! DynamoDB. Running jobs carry `lease_until`, so the sparse index [`STATE_LEASE_INDEX`]
//! (`state`, `lease_until`) holds exactly the jobs the reaper looks at: no scans.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use super::errors::Resource;
use crate::job::{Job, JobId, JobState, Precondition, Transition};
use crate::ports::{BackendError, CreateError, JobStore, TransitionError};
use crate::time::Millis;

const BACKEND: &str = "dynamodb";
/// The global secondary index on (`state`, `lease_until`); `template.yaml` must declare it.
pub const STATE_LEASE_INDEX: &str = "state-lease_until";

type Item = HashMap<String, AttributeValue>;

#[derive(Clone, Debug)]
pub struct DynamoJobStore {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn backend(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(BACKEND, e)
}

fn to_item(job: &Job) -> Result<Item, BackendError> {
    let mut item = Item::new();
    item.insert("id".into(), s(job.id.to_string()));
    item.insert("state".into(), s(job.state.as_str()));
    item.insert(
        "request".into(),
        s(serde_json::to_string(&job.request).map_err(backend)?),
    );
    item.insert("request_hash".into(), s(&job.request_hash));
    item.insert("created_at".into(), n(job.created_at.0));
    if let Some(v) = job.started_at {
        item.insert("started_at".into(), n(v.0));
    }
    if let Some(v) = job.finished_at {
        item.insert("finished_at".into(), n(v.0));
    }
    if let Some(v) = job.lease_until {
        item.insert("lease_until".into(), n(v.0));
    }
    item.insert("attempt".into(), n(job.attempt));
    if let Some(r) = &job.result {
        item.insert(
            "result".into(),
            s(serde_json::to_string(r).map_err(backend)?),
        );
    }
    if let Some(e) = &job.error {
        item.insert("error".into(), s(e));
    }
    item.insert("expires_at".into(), n(job.expires_at.0));
    item.insert("expires_at_s".into(), n(job.expires_at.as_secs()));
    Ok(item)
}

#[derive(Debug, thiserror::Error)]
#[error("malformed job item: attribute {0}")]
struct Malformed(&'static str);

fn from_item(item: &Item) -> Result<Job, BackendError> {
    let get_s = |k: &'static str| -> Result<Option<&String>, BackendError> {
        match item.get(k) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(_) => Err(backend(Malformed(k))),
        }
    };
    let get_n = |k: &'static str| -> Result<Option<i64>, BackendError> {
        match item.get(k) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| backend(Malformed(k))),
            Some(_) => Err(backend(Malformed(k))),
        }
    };
    let req_s = |k: &'static str| get_s(k)?.ok_or_else(|| backend(Malformed(k)));
    let req_n = |k: &'static str| get_n(k)?.ok_or_else(|| backend(Malformed(k)));
    Ok(Job {
        id: req_s("id")?.parse().map_err(|_| backend(Malformed("id")))?,
        state: req_s("state")?
            .parse::<JobState>()
            .map_err(|_| backend(Malformed("state")))?,
        request: serde_json::from_str(req_s("request")?)
            .map_err(|_| backend(Malformed("request")))?,
        request_hash: req_s("request_hash")?.clone(),
        created_at: Millis(req_n("created_at")?),
        started_at: get_n("started_at")?.map(Millis),
        finished_at: get_n("finished_at")?.map(Millis),
        lease_until: get_n("lease_until")?.map(Millis),
        attempt: u32::try_from(req_n("attempt")?).map_err(|_| backend(Malformed("attempt")))?,
        result: match get_s("result")? {
            Some(r) => Some(serde_json::from_str(r).map_err(|_| backend(Malformed("result")))?),
            None => None,
        },
        error: get_s("error")?.cloned(),
        expires_at: Millis(req_n("expires_at")?),
    })
}

/// The expression parts of one conditional update.
struct Update {
    condition: String,
    update: String,
    names: Vec<(&'static str, &'static str)>,
    values: Vec<(&'static str, AttributeValue)>,
}

/// `transition` as a DynamoDB conditional update: the condition is its precondition (and
/// "exists, not expired"), the update sets what [`Transition::apply`] sets.
fn update_for(t: &Transition, now: Millis) -> Result<Update, BackendError> {
    let mut names = vec![("#s", "state"), ("#x", "expires_at")];
    let mut values = vec![(":now", n(now.0))];
    let precondition = match t.precondition() {
        Precondition::StartableAt(at) => {
            names.push(("#l", "lease_until"));
            values.push((":queued", s(JobState::Queued.as_str())));
            values.push((":running", s(JobState::Running.as_str())));
            values.push((":at", n(at.0)));
            "#s = :queued OR (#s = :running AND #l < :at)"
        }
        Precondition::RunningAttempt(attempt) => {
            names.push(("#a", "attempt"));
            values.push((":running", s(JobState::Running.as_str())));
            values.push((":attempt", n(attempt)));
            "#s = :running AND #a = :attempt"
        }
        Precondition::NotTerminal => {
            values.push((":queued", s(JobState::Queued.as_str())));
            values.push((":running", s(JobState::Running.as_str())));
            "#s IN (:queued, :running)"
        }
        Precondition::LapsedAttempt { attempt, at } => {
            names.push(("#a", "attempt"));
            names.push(("#l", "lease_until"));
            values.push((":running", s(JobState::Running.as_str())));
            values.push((":attempt", n(attempt)));
            values.push((":at", n(at.0)));
            "#s = :running AND #a = :attempt AND #l < :at"
        }
    };
    let condition = format!("attribute_exists(id) AND #x > :now AND ({precondition})");
    values.push((":target", s(t.target().as_str())));
    let update = match t {
        Transition::Start { at, lease_until } => {
            names.push(("#sa", "started_at"));
            names.push(("#a", "attempt"));
            if !names.contains(&("#l", "lease_until")) {
                names.push(("#l", "lease_until"));
            }
            values.push((":started", n(at.0)));
            values.push((":lease", n(lease_until.0)));
            values.push((":one", n(1)));
            "SET #s = :target, #sa = :started, #l = :lease ADD #a :one".to_string()
        }
        Transition::Finish { at, result, .. } => {
            names.push(("#fa", "finished_at"));
            names.push(("#l", "lease_until"));
            names.push(("#r", "result"));
            values.push((":finished", n(at.0)));
            values.push((
                ":result",
                s(serde_json::to_string(result).map_err(backend)?),
            ));
            "SET #s = :target, #fa = :finished, #r = :result REMOVE #l".to_string()
        }
        Transition::Fail { at, reason } => {
            names.push(("#fa", "finished_at"));
            names.push(("#l", "lease_until"));
            names.push(("#e", "error"));
            values.push((":finished", n(at.0)));
            values.push((":reason", s(reason.clone())));
            "SET #s = :target, #fa = :finished, #e = :reason REMOVE #l".to_string()
        }
        // Without `lease_until` the item leaves the sparse reaper index.
        Transition::Requeue { .. } => "SET #s = :target REMOVE #l".to_string(),
        Transition::Renew { lease_until, .. } => {
            names.push(("#l", "lease_until"));
            values.push((":lease", n(lease_until.0)));
            "SET #s = :target, #l = :lease".to_string()
        }
    };
    Ok(Update {
        condition,
        update,
        names,
        values,
    })
}

impl DynamoJobStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoJobStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The stored item, even if expired, read consistently.
    async fn read(&self, id: JobId) -> Result<Option<Job>, BackendError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| super::resource_error(Resource::Table(&self.table), e))?;
        out.item().map(from_item).transpose()
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create(&self, job: &Job) -> Result<(), CreateError> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(job)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(CreateError::Exists(job.id))
            }
            Err(e) => Err(super::resource_error(Resource::Table(&self.table), e).into()),
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, BackendError> {
        // Strongly consistent: a status poll right after submit must see the job.
        let now = Millis::now();
        Ok(self.read(id).await?.filter(|j| j.expires_at > now))
    }

    async fn transition(&self, id: JobId, transition: Transition) -> Result<Job, TransitionError> {
        let now = Millis::now();
        let u = update_for(&transition, now)?;
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.to_string()))
            .condition_expression(u.condition)
            .update_expression(u.update)
            .return_values(ReturnValue::AllNew);
        for (k, v) in u.names {
            req = req.expression_attribute_names(k, v);
        }
        for (k, v) in u.values {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(out) => {
                let item = out
                    .attributes()
                    .ok_or_else(|| backend("UpdateItem returned no attributes"))?;
                Ok(from_item(item)?)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                match self.read(id).await? {
                    Some(job) if job.expires_at > now => {
                        Err(TransitionError::Conflict(crate::job::Conflict {
                            current: Box::new(job),
                        }))
                    }
                    _ => Err(TransitionError::NotFound(id)),
                }
            }
            Err(e) => Err(super::resource_error(Resource::Table(&self.table), e).into()),
        }
    }

    async fn expired_leases(&self, before: Millis, limit: usize) -> Result<Vec<Job>, BackendError> {
        let now = Millis::now();
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(STATE_LEASE_INDEX)
                .key_condition_expression("#s = :running AND #l < :before")
                .filter_expression("#x > :now")
                .expression_attribute_names("#s", "state")
                .expression_attribute_names("#l", "lease_until")
                .expression_attribute_names("#x", "expires_at")
                .expression_attribute_values(":running", s(JobState::Running.as_str()))
                .expression_attribute_values(":before", n(before.0))
                .expression_attribute_values(":now", n(now.0))
                .scan_index_forward(true)
                .limit(i32::try_from(limit).unwrap_or(i32::MAX).max(1))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| super::resource_error(Resource::Table(&self.table), e))?;
            for item in page.items() {
                if out.len() < limit {
                    out.push(from_item(item)?);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), BackendError> {
        // A read of an id that cannot exist: needs only GetItem permission, unlike DescribeTable.
        self.client
            .get_item()
            .table_name(&self.table)
            .key("id", s("ping"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::resource_error(Resource::Table(&self.table), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let mut job = Job::queued(
            JobId::new(),
            serde_json::json!({"keyboard": "dz60", "layers": [["KC_A"]]}),
            "h".into(),
            Millis(1_700_000_000_123),
            std::time::Duration::from_secs(3600),
        );
        assert_eq!(from_item(&to_item(&job).unwrap()).unwrap(), job);
        job.state = JobState::Finished;
        job.lease_until = Some(Millis(5));
        job.result = Some(crate::job::JobResult {
            returncode: 2,
            output: "x".into(),
            ..Default::default()
        });
        job.error = Some("e".into());
        let item = to_item(&job).unwrap();
        assert_eq!(item["expires_at_s"], n(1_700_003_600));
        assert_eq!(from_item(&item).unwrap(), job);
        let mut bad = item.clone();
        bad.insert("attempt".into(), s("one"));
        assert!(from_item(&bad).is_err());
    }

    #[test]
    fn every_placeholder_is_defined_and_used() {
        let transitions = [
            Transition::Start {
                at: Millis(1),
                lease_until: Millis(2),
            },
            Transition::Finish {
                at: Millis(1),
                attempt: 1,
                result: Default::default(),
            },
            Transition::Fail {
                at: Millis(1),
                reason: "r".into(),
            },
            Transition::Renew {
                attempt: 1,
                lease_until: Millis(2),
            },
            Transition::Requeue {
                at: Millis(3),
                attempt: 1,
            },
        ];
        for t in transitions {
            let u = update_for(&t, Millis(0)).unwrap();
            let text = format!("{} {}", u.condition, u.update);
            for (k, _) in &u.names {
                assert!(text.contains(k), "{k} unused in {text}");
            }
            for (k, _) in &u.values {
                assert!(
                    k.starts_with(':') && text.contains(k),
                    "{k} unused in {text}"
                );
            }
            let mut keys: Vec<_> = u.names.iter().map(|(k, _)| *k).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), u.names.len(), "duplicate names");
        }
    }
}
