//! One SMTP session's plugin instances: created lazily at the first hook a plugin wants,
//! dropped with the session, or at once after a fault.

use super::bindings::types::{AuthResults, DataResult, EnvelopeFrom, Hook, Verdict};
use super::breaker::Gate;
use super::edits::{EditTarget, Edits};
use super::fault::{Fault, GuestFault};
use super::hooks::Call;
use super::host::HostState;
use super::meter::{self, Label};
use super::verdict::{DataOutcome, Decision, validate, validate_changes};
use super::{Instance, PluginSet, SessionInfo, engine};
use crate::config::OnError;
use crate::proto::replies;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Store;

const _: () = assert!(Hook::ALL.len() == meter::HOOKS && Decision::KINDS.len() == meter::VERDICTS);

/// Runs one guest call, begun at `started`, under its deadline: at each epoch tick the
/// guest yields, and traps once past the deadline (see `PluginSet::instantiate`); a tokio
/// timer (a little later) ends one that waits in a host call; what the guest printed goes
/// to the log whatever happened. Most calls end at their first poll: the timer is only
/// set for one that does not (registering it costs more than the rest of a short call).
pub(super) async fn guarded<T>(
    store: &mut Store<HostState>,
    started: Instant,
    timeout: Duration,
    call: impl AsyncFnOnce(&mut Store<HostState>) -> wasmtime::Result<T>,
) -> Result<T, Fault> {
    let state = store.data_mut();
    state.deadline = started + timeout;
    state.limits.refused = false;
    store.set_epoch_deadline(1);
    let result = {
        let mut call = std::pin::pin!(call(store));
        match futures::poll!(call.as_mut()) {
            std::task::Poll::Ready(result) => Ok(result),
            std::task::Poll::Pending => {
                let end = started + timeout + engine::EPOCH_TICK * 10;
                tokio::time::timeout_at(end.into(), call).await
            }
        }
    };
    store.data_mut().flush_output();
    match result {
        Err(_) => Err(GuestFault::NoAnswer(timeout).into()),
        Ok(Err(e)) => Err(Fault::from_call(e, timeout, store.data().limits.refused)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Lets the guest's `edit` calls through until `take_edits`; `target` at data only.
fn open_edits(store: &mut Store<HostState>, target: Option<EditTarget>) {
    store.data_mut().edit = Some(super::edits::Scope {
        target,
        edits: Edits::default(),
    });
}

/// What the call asked for; nothing more until the next call opens its edits.
fn take_edits(store: &mut Store<HostState>) -> Edits {
    store
        .data_mut()
        .edit
        .take()
        .map(|scope| scope.edits)
        .unwrap_or_default()
}

/// A refusal with the lines the plugin set for it (RFC 5321 4.2.1 multi-line reply).
fn with_reply(decision: Decision, lines: Option<Vec<String>>) -> Decision {
    let Some(lines) = lines else {
        return decision;
    };
    match decision {
        Decision::Refuse(r) => Decision::Refuse(r.with_text(lines.join("\n"))),
        Decision::Disconnect(r) => Decision::Disconnect(r.with_text(lines.join("\n"))),
        d => d,
    }
}

/// What `on_error` answers for a plugin that failed (or is switched off).
fn answer(on_error: OnError) -> Option<Decision> {
    match on_error {
        OnError::Continue => None,
        OnError::Tempfail => Some(Decision::Refuse(replies::PLUGIN_TEMPFAIL)),
        OnError::Reject => Some(Decision::Refuse(replies::PLUGIN_REJECT)),
    }
}

/// What the data hook is called with: the session, the envelope, the message, its
/// authentication results, and where the plugins' edits go.
pub struct DataCall<'a> {
    pub session: &'a SessionInfo,
    pub sender: &'a EnvelopeFrom,
    pub recipients: &'a [String],
    pub message: Arc<super::message::Message>,
    pub auth: &'a AuthResults,
    pub target: &'a EditTarget,
}

pub struct PluginSession {
    set: Arc<PluginSet>,
    instances: Vec<Option<Instance>>,
}

impl PluginSession {
    pub(super) fn new(set: Arc<PluginSet>) -> PluginSession {
        let instances = set.plugins.iter().map(|_| None).collect();
        PluginSession { set, instances }
    }

    /// Does a plugin of the SMTP dialogue (not one after the queue) want `hook`?
    pub fn wants(&self, hook: Hook) -> bool {
        self.set.plugins.iter().any(|p| p.in_session(hook))
    }

    /// Does a plugin before the queue (`after_queue`: after it) want the data hook?
    pub fn wants_data(&self, after_queue: bool) -> bool {
        self.set.wants_data(after_queue)
    }

    /// Runs the hook through every plugin that wants it, in config order.
    pub async fn run(&mut self, session: &SessionInfo, call: Call<'_>) -> Decision {
        let hook = call.hook();
        for i in 0..self.set.plugins.len() {
            if !self.set.plugins[i].in_session(hook) {
                continue;
            }
            if let Some(answer) = self.switched_off(i) {
                match answer {
                    Some(d) => return d,
                    None => continue,
                }
            }
            let started = Instant::now();
            let decision = match self.call(i, session, &call, started).await {
                Ok((verdict, reply)) => validate(verdict.into())
                    .map(|d| with_reply(d, reply))
                    .map_err(Fault::from),
                Err(fault) => Err(fault),
            };
            self.count(i, hook, started, decision.as_ref().ok(), 0);
            match decision {
                Ok(_) if self.set.plugins[i].shadow => {}
                Ok(Decision::Continue) => {}
                Ok(d) => return d,
                Err(fault) => {
                    if let Some(d) = self.fault(i, hook, fault) {
                        return d;
                    }
                }
            }
        }
        Decision::Continue
    }

    /// The data hook of the plugins before the queue (`after_queue`: of those after it):
    /// like `run`, collecting the changes of every plugin that ran (a shadow plugin's are
    /// counted and logged, not kept).
    pub async fn data(&mut self, after_queue: bool, call: &DataCall<'_>) -> DataOutcome {
        let mut out = DataOutcome::default();
        for i in 0..self.set.plugins.len() {
            if !self.set.plugins[i].wants_data(after_queue) {
                continue;
            }
            if let Some(answer) = self.switched_off(i) {
                match answer {
                    Some(d) => {
                        out.decision = d;
                        return out;
                    }
                    None => continue,
                }
            }
            let started = Instant::now();
            let result = self.call_data(i, call, started).await;
            let shadow = self.set.plugins[i].shadow;
            let mut changes = 0;
            let decision = result.and_then(|(r, edits)| {
                let d = validate(r.verdict)?;
                validate_changes(&r.changes)?;
                changes = r.changes.len() + edits.edits.len() + usize::from(edits.body.is_some());
                if shadow {
                    return Ok(d);
                }
                out.changes.extend(r.changes);
                out.edits.extend(edits.edits);
                // The last body written is the one that goes on.
                if edits.body.is_some() {
                    out.body = edits.body;
                }
                Ok(match d {
                    Decision::Refuse(_) | Decision::Disconnect(_) => with_reply(d, edits.reply),
                    d => {
                        out.reply = edits.reply.or(out.reply.take());
                        d
                    }
                })
            });
            self.count(i, Hook::Data, started, decision.as_ref().ok(), changes);
            match decision {
                Ok(_) if shadow => {}
                Ok(Decision::Continue) => {}
                Ok(decision) => {
                    out.decision = decision;
                    return out;
                }
                Err(fault) => {
                    if let Some(decision) = self.fault(i, Hook::Data, fault) {
                        out.decision = decision;
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Plugin `i` switched off by its breaker: `Some` with its `on_error` answer (`None`:
    /// go on without it); `None` when it may be called.
    fn switched_off(&self, i: usize) -> Option<Option<Decision>> {
        let p = &self.set.plugins[i];
        if p.breaker.gate() == Gate::Call {
            return None;
        }
        Some(if p.shadow { None } else { answer(p.on_error) })
    }

    async fn instance(&mut self, i: usize) -> Result<&mut Instance, Fault> {
        if self.instances[i].is_none() {
            let (instance, _) = self.set.instantiate(&self.set.plugins[i]).await?;
            self.instances[i] = Some(instance);
        }
        Ok(self.instances[i].as_mut().expect("just created"))
    }

    async fn call(
        &mut self,
        i: usize,
        session: &SessionInfo,
        call: &Call<'_>,
        started: Instant,
    ) -> Result<(Verdict, Option<Vec<String>>), Fault> {
        let timeout = self.set.plugins[i].timeout;
        // A new instance's call gets its whole timeout after the instantiation.
        let fresh = self.instances[i].is_none();
        let Instance { store, bindings } = self.instance(i).await?;
        let started = if fresh { Instant::now() } else { started };
        let hooks = bindings.wasmtp_plugin_hooks();
        open_edits(store, None);
        let verdict = guarded(store, started, timeout, async |store| match call {
            Call::Connect => hooks.call_on_connect(store, session).await,
            Call::Helo { name, extended } => {
                hooks.call_on_helo(store, session, name, *extended).await
            }
            Call::Auth {
                mechanism,
                user,
                success,
            } => {
                hooks
                    .call_on_auth(store, session, mechanism, user, *success)
                    .await
            }
            Call::Mail { sender, spf } => hooks.call_on_mail(store, session, sender, spf).await,
            Call::Rcpt {
                sender,
                recipient,
                params,
                accepted,
            } => {
                hooks
                    .call_on_rcpt(store, session, sender, recipient, params, accepted)
                    .await
            }
            Call::Vrfy(arg) => hooks.call_on_vrfy(store, session, arg).await,
            Call::Expn(arg) => hooks.call_on_expn(store, session, arg).await,
        })
        .await;
        // Outside the data hook only the reply's text can have been asked for.
        Ok((verdict?, take_edits(store).reply))
    }

    async fn call_data(
        &mut self,
        i: usize,
        call: &DataCall<'_>,
        started: Instant,
    ) -> Result<(DataResult, Edits), Fault> {
        let set = self.set.clone();
        let p = &set.plugins[i];
        // After the queue, the plugin's own limit of scans at once.
        let _permit = match &p.after_queue {
            Some(scans) => Some(scans.acquire().await.expect("never closed")),
            None => None,
        };
        let timeout = p.timeout;
        let fresh = self.instances[i].is_none();
        let Instance { store, bindings } = self.instance(i).await?;
        let started = if fresh { Instant::now() } else { started };
        let handle = store
            .data_mut()
            .table
            .push(super::message::MessageData(call.message.clone()))
            .map_err(super::fault::HostFault::from)?;
        let borrowed = wasmtime::component::Resource::new_borrow(handle.rep());
        let hooks = bindings.wasmtp_plugin_hooks();
        open_edits(store, Some(call.target.clone()));
        let result = guarded(store, started, timeout, async |store| {
            hooks
                .call_on_data(
                    store,
                    call.session,
                    call.sender,
                    call.recipients,
                    borrowed,
                    call.auth,
                )
                .await
        })
        .await;
        let _ = store.data_mut().table.delete(handle);
        Ok((result?, take_edits(store)))
    }

    /// Counts one call of plugin `i` at `hook`, begun at `started`, and its verdict with
    /// the `changes` it asked for (`None`: it faulted, counted as such by `fault`); a
    /// shadow plugin's verdict is logged too, since nothing else shows it.
    fn count(
        &self,
        i: usize,
        hook: Hook,
        started: Instant,
        verdict: Option<&Decision>,
        changes: usize,
    ) {
        let p = &self.set.plugins[i];
        let (meter, name) = (&p.shared.meter, &*p.shared.name);
        let label = Label {
            index: hook.index(),
            name: hook.name(),
        };
        meter.call(label, started.elapsed());
        if let Some(d) = verdict {
            p.breaker.success(hook.name());
            let kind = Label {
                index: d.index(),
                name: d.kind(),
            };
            meter.verdict(label, kind);
            if p.shadow {
                tracing::info!(
                    plugin = name,
                    hook = hook.name(),
                    verdict = d.kind(),
                    changes,
                    "shadow plugin's verdict, not applied"
                );
            }
        }
    }

    /// Drops the instance, logs and counts the fault, and answers per `on_error`.
    fn fault(&mut self, i: usize, hook: Hook, fault: Fault) -> Option<Decision> {
        let p = &self.set.plugins[i];
        self.instances[i] = None;
        p.shared.meter.fault(fault.kind());
        if p.breaker.fault(hook.name()) {
            p.shared.meter.breaker_opened();
            tracing::warn!(
                plugin = %p.shared.name,
                cooldown_ms = u64::try_from(p.breaker_cooldown.as_millis()).unwrap_or(u64::MAX),
                "plugin faulted too often in a row: switched off, its on_error answers"
            );
        }
        tracing::error!(
            plugin = %p.shared.name,
            hook = hook.name(),
            fault = fault.side(),
            on_error = p.on_error.as_str(),
            "plugin failed: {fault}"
        );
        // A shadow plugin's faults are counted and logged, and answer nothing.
        if p.shadow { None } else { answer(p.on_error) }
    }
}
