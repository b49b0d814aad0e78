//! The append rules: what an append may write and what it is answered, decided from what the
//! store holds, in one piece of pure code that every backend calls from inside the transaction
//! that will hold the append.
//!
//! A backend answers the questions of [`AppendContext`] from its transaction (including what
//! earlier appends of the same commit group wrote), calls [`decide`], and carries out the
//! [`Decision`]: writes the records [`render`] gives at the planned positions, the stream's new
//! version, the index entries of the ids the plan marks, the command record and its tally; or
//! writes nothing and answers what the decision says. The order of the checks is part of the
//! contract: a retry of a stored append succeeds although the stream has moved on since.

use std::collections::HashSet;

use crate::event_id::GeneratedId;
use crate::names::{validate_event_id, validate_event_type, validate_stream_name};
use crate::record::{EventView, json_string, render_record};
use crate::{AppendRequest, AppendResult, CommitError, StorageError, StoredCommand};

/// Where a stored event id points: its position, and the first position and length of the
/// append that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdEntry {
    pub position: u64,
    pub first_position: u64,
    pub count: u32,
}

/// What the rules ask of the store, as the transaction deciding the append sees it: the
/// committed state plus the writes of the appends decided before it in the same group.
pub trait AppendContext {
    /// The last position written (0 when the log is empty).
    fn head(&self) -> u64;
    /// The tag this store writes into the ids it generates ([`GeneratedId`]).
    fn id_tag(&self) -> u32;
    /// The stream's version, 0 when it does not exist.
    fn stream_version(&mut self, stream: &str) -> Result<u64, StorageError>;
    /// The index entry of an id kept in the id index (ids clients chose, and generated ids
    /// that could not encode their position).
    fn indexed_id(&mut self, id: &str) -> Result<Option<IdEntry>, StorageError>;
    /// The record at `position`, which is at most [`AppendContext::head`].
    fn record(&mut self, position: u64) -> Result<Vec<u8>, StorageError>;
    /// The recorded command with this id.
    fn command(&mut self, id: &str) -> Result<Option<StoredCommand>, StorageError>;
}

/// What to do with an append.
#[derive(Debug)]
pub enum Decision {
    /// Write nothing and refuse the append.
    Refuse(CommitError),
    /// Write nothing: every event is stored already by one identical earlier append.
    AlreadyWritten(AppendResult),
    /// Write what the plan says.
    Write(AppendPlan),
}

/// What an admitted append writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendPlan {
    /// The positions and versions the append takes (for an append carrying only a command:
    /// `first_position` = head + 1, `last_position` = head, versions 0).
    pub result: AppendResult,
    /// The id of each event, in order: the client's, or one generated for it.
    pub ids: Vec<String>,
    /// Which of `ids` go into the id index (a generated id that encodes its position does not).
    pub indexed: Vec<bool>,
    /// The stream's version after the append.
    pub stream_version: u64,
}

impl AppendPlan {
    /// How many events the append writes.
    pub fn event_count(&self) -> u64 {
        self.ids.len() as u64
    }

    /// The entry the command record is stored with: the last position the append wrote (the
    /// head when it wrote none) and how many events it wrote.
    pub fn command_entry(&self, record: &[u8]) -> StoredCommand {
        StoredCommand {
            record: record.to_vec(),
            position: self.result.last_position,
            event_count: self.event_count(),
        }
    }

    /// The index entry of event `offset` of the append.
    pub fn id_entry(&self, offset: usize) -> IdEntry {
        IdEntry {
            position: self.result.first_position + offset as u64,
            first_position: self.result.first_position,
            count: self.ids.len() as u32,
        }
    }
}

/// Decides an append against what the store holds. The outer error is a storage failure (the
/// whole group fails); a refusal is [`Decision::Refuse`].
pub fn decide(
    context: &mut impl AppendContext,
    request: &AppendRequest,
) -> Result<Decision, StorageError> {
    if let Err(reason) = check_request(request) {
        return Ok(Decision::Refuse(CommitError::Invalid(reason)));
    }
    let head = context.head();
    if let Some(command) = &request.command {
        if let Some(stored) = context.command(&command.id)? {
            return Ok(Decision::Refuse(CommitError::CommandRecorded(stored)));
        }
        if request.events.is_empty() {
            return Ok(Decision::Write(AppendPlan {
                result: AppendResult {
                    first_version: 0,
                    last_version: 0,
                    first_position: head + 1,
                    last_position: head,
                },
                ids: Vec::new(),
                indexed: Vec::new(),
                stream_version: context.stream_version(&request.stream)?,
            }));
        }
    }
    match find_earlier_append(context, request)? {
        EarlierAppend::None => {}
        EarlierAppend::Reserved(id) => {
            return Ok(Decision::Refuse(CommitError::Invalid(format!(
                "event id {id:?} has the form of the ids this store generates, but no such \
                 event is stored; choose another id or leave it out"
            ))));
        }
        EarlierAppend::Same(result) => return Ok(Decision::AlreadyWritten(result)),
        EarlierAppend::Conflict { id, why } => {
            return Ok(Decision::Refuse(CommitError::DuplicateEventId { id, why }));
        }
    }
    let actual = context.stream_version(&request.stream)?;
    if !request.expected_version.admits(actual) {
        return Ok(Decision::Refuse(CommitError::WrongExpectedVersion {
            expected: request.expected_version,
            actual,
        }));
    }
    let count = request.events.len() as u64;
    let first_position = head + 1;
    let mut ids = Vec::with_capacity(request.events.len());
    let mut indexed = Vec::with_capacity(request.events.len());
    for (offset, event) in request.events.iter().enumerate() {
        let (id, index) = match &event.id {
            Some(id) => (id.clone(), true),
            None => {
                let at = GeneratedId {
                    position: first_position + offset as u64,
                    offset: offset as u32,
                    count: count as u32,
                };
                match at.encode(context.id_tag()) {
                    Some(generated) => (generated, false),
                    // An id that cannot encode its position goes into the index instead.
                    None => (uuid::Uuid::new_v4().to_string(), true),
                }
            }
        };
        ids.push(id);
        indexed.push(index);
    }
    Ok(Decision::Write(AppendPlan {
        result: AppendResult {
            first_version: actual + 1,
            last_version: actual + count,
            first_position,
            last_position: first_position + count - 1,
        },
        ids,
        indexed,
        stream_version: actual + count,
    }))
}

/// Renders the records of a planned append, one after another into `out`; answers where each
/// record ends in `out`.
pub fn render(
    request: &AppendRequest,
    plan: &AppendPlan,
    recorded_at: &str,
    out: &mut Vec<u8>,
) -> Vec<usize> {
    let stream_json = json_string(&request.stream);
    let mut ends = Vec::with_capacity(plan.ids.len());
    for (offset, (event, id)) in request.events.iter().zip(&plan.ids).enumerate() {
        render_record(
            out,
            plan.result.first_position + offset as u64,
            &stream_json,
            plan.result.first_version + offset as u64,
            id,
            event,
            recorded_at,
        );
        ends.push(out.len());
    }
    ends
}

/// The last line of defence: callers validate first, but nothing breaks the store's rules.
fn check_request(request: &AppendRequest) -> Result<(), String> {
    validate_stream_name(&request.stream)?;
    if request.events.is_empty() && request.command.is_none() {
        return Err("an append needs at least one event".into());
    }
    if request.events.len() > u32::MAX as usize {
        return Err("too many events in one append".into());
    }
    let mut ids = HashSet::new();
    for event in &request.events {
        validate_event_type(&event.event_type)?;
        let Some(id) = &event.id else { continue };
        validate_event_id(id)?;
        if request.events.len() > 1 && !ids.insert(id.as_str()) {
            return Err(format!("event id {id:?} appears twice in one append"));
        }
    }
    Ok(())
}

enum EarlierAppend {
    /// No event id of the request is stored.
    None,
    /// The request repeats one earlier append exactly: its numbers.
    Same(AppendResult),
    /// Some id is stored, but the request is not a repeat of the append that stored it.
    Conflict { id: String, why: &'static str },
    /// A client chose an id of the form this store generates that it has not generated.
    Reserved(String),
}

/// What the store knows of one client-chosen event id.
enum IdLookup {
    Stored(IdEntry),
    Absent,
    /// Has the form of a generated id of this store, but names no stored event.
    Reserved,
}

/// Looks an id up in the index and, for ids of the generated form, at the position it names.
fn find_id(context: &mut impl AppendContext, id: &str) -> Result<IdLookup, StorageError> {
    if let Some(entry) = context.indexed_id(id)? {
        return Ok(IdLookup::Stored(entry));
    }
    let Some(generated) = GeneratedId::decode(id, context.id_tag()) else {
        return Ok(IdLookup::Absent);
    };
    if generated.position <= context.head() {
        let record = context.record(generated.position)?;
        if parse_record(&record, generated.position)?.id == id {
            return Ok(IdLookup::Stored(IdEntry {
                position: generated.position,
                first_position: generated.first_position(),
                count: generated.count,
            }));
        }
    }
    Ok(IdLookup::Reserved)
}

fn parse_record(record: &[u8], position: u64) -> Result<EventView<'_>, StorageError> {
    EventView::parse(record).map_err(|e| StorageError::Corrupt {
        position,
        reason: e.to_string(),
    })
}

/// Decides whether a request is a retry of an append already stored; done before the expected
/// version is checked, so the retry of a successful append succeeds.
fn find_earlier_append(
    context: &mut impl AppendContext,
    request: &AppendRequest,
) -> Result<EarlierAppend, StorageError> {
    if request.events.iter().all(|e| e.id.is_none()) {
        // Ids the store is about to generate are new by construction.
        return Ok(EarlierAppend::None);
    }
    let mut stored = Vec::with_capacity(request.events.len());
    for event in &request.events {
        let found = match &event.id {
            None => None,
            Some(id) => match find_id(context, id)? {
                IdLookup::Stored(entry) => Some(entry),
                IdLookup::Absent => None,
                IdLookup::Reserved => return Ok(EarlierAppend::Reserved(id.clone())),
            },
        };
        stored.push(found);
    }
    let Some(first_found) = request
        .events
        .iter()
        .zip(&stored)
        .find(|(_, s)| s.is_some())
    else {
        return Ok(EarlierAppend::None);
    };
    let conflict = |why| {
        Ok(EarlierAppend::Conflict {
            id: first_found.0.id.clone().unwrap_or_default(),
            why,
        })
    };
    if stored.iter().any(Option::is_none) {
        return conflict("by another append; only some ids of this request are stored");
    }
    let first = stored[0].expect("all found");
    let one_append = first.count as usize == request.events.len()
        && stored.iter().enumerate().all(|(i, s)| {
            let entry = s.expect("all found");
            entry.first_position == first.first_position
                && entry.position == first.first_position + i as u64
        });
    if !one_append {
        return conflict("by another append with other events");
    }
    let mut versions = (0, 0);
    for (i, event) in request.events.iter().enumerate() {
        let position = first.first_position + i as u64;
        let record = context.record(position)?;
        let view = parse_record(&record, position)?;
        if view.stream != request.stream {
            return conflict("in another stream");
        }
        if view.event_type != event.event_type || view.data.get() != event.data {
            return conflict("with another type or data");
        }
        if i == 0 {
            versions.0 = view.version;
        }
        versions.1 = view.version;
    }
    Ok(EarlierAppend::Same(AppendResult {
        first_version: versions.0,
        last_version: versions.1,
        first_position: first.first_position,
        last_position: first.first_position + u64::from(first.count) - 1,
    }))
}
