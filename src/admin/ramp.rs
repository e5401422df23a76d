//! Handlers for a slot's ramp: start (or replace) it, show it, stop it.
//! The runner (`control::ramp`) does the stepping; these only change the
//! persisted ramp and its activity-log operation.

use super::extract::{ApiError, ApiResult, JsonBody, Path};
use super::AdminState;
use crate::activity::{now, Action, Operation, PhaseName, PhaseResult, Status};
use crate::api::{RampView, Revised, StartRamp};
use crate::control::ramp;
use crate::model::PRODUCTION;
use crate::ramp::RampStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

fn percent_of(state: &crate::model::State, site: &str, slot: &str) -> Option<f64> {
    state.sites.get(site)?.slots.get(slot)?.traffic_percent
}

pub(super) async fn start(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
    JsonBody(spec): JsonBody<StartRamp>,
) -> ApiResult<Json<Revised<RampView>>> {
    let mut op = Operation::new(&site, PRODUCTION, &slot, Action::Ramp);
    let (s, sl, id) = (site.clone(), slot.clone(), op.id.clone());
    let ((ramp, replaced, percent), revision) = st
        .write(move |c| {
            c.update_doc(|doc| {
                let (r, old) = ramp::start(doc, &s, &sl, spec.clone(), &id, &now())?;
                Ok((r, old, percent_of(&doc.state, &s, &sl)))
            })
        })
        .await?;
    let from = percent.unwrap_or(0.0);
    let sp = &ramp.spec;
    let gates = &sp.gates;
    op.add_phase(
        PhaseName::Start,
        PhaseResult::Succeeded,
        format!(
            "from {from}% to {}% by {} every {} s; gates: 5xx ≤ {}, p99 ≤ {}, at least {} responses{}; on breach {}{}",
            sp.max_percent,
            sp.step,
            sp.interval_secs,
            gates.max_error_ratio.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
            gates.max_p99_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            gates.min_requests,
            gates.max_shadow_diff_ratio.map_or(String::new(), |r| format!(
                ", shadow answers differing ≤ {:.1}%",
                r * 100.0
            )),
            match sp.on_breach {
                crate::ramp::OnBreach::Rollback => format!("roll back to {}%", sp.min_percent),
                crate::ramp::OnBreach::Pause => "pause".into(),
            },
            sp.decision_callback_url
                .as_deref()
                .map_or(String::new(), |u| format!("; decision callback {u}")),
        ),
    );
    let control = st.control.clone();
    let replaced_id = replaced
        .filter(|r| r.status.is_active())
        .map(|r| r.operation_id);
    let new_op = op.clone();
    tokio::task::spawn_blocking(move || {
        control.record(&new_op)?;
        if let Some(id) = replaced_id {
            control.update_operation(&id, |old| {
                if old.status.is_final() {
                    return;
                }
                old.add_phase(
                    PhaseName::Stop,
                    PhaseResult::Succeeded,
                    "replaced by a new ramp",
                );
                old.finish(
                    Status::Cancelled,
                    Some(format!("replaced by ramp {}", new_op.id)),
                );
            })?;
        }
        Ok::<_, crate::control::ControlError>(())
    })
    .await
    .map_err(ApiError::internal)??;
    crate::metrics::ramp_percent(&site, &slot, Some(from));
    log::info!(
        "admin: ramp of {site}/{slot} started at {from}% ({})",
        op.id
    );
    Ok(Json(Revised {
        revision,
        body: RampView::of(&site, &slot, &ramp, percent),
    }))
}

pub(super) async fn show(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
) -> ApiResult<Json<Revised<RampView>>> {
    let (ramps, state) = (st.control.ramps(), st.control.state());
    let ramp = ramps.get(&site).and_then(|r| r.get(&slot)).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("slot {slot:?} of site {site:?} has no ramp"),
        )
    })?;
    Ok(Json(Revised {
        revision: st.control.snapshot().revision,
        body: RampView::of(&site, &slot, ramp, percent_of(&state, &site, &slot)),
    }))
}

pub(super) async fn stop(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
) -> ApiResult<Json<Revised<RampView>>> {
    let (s, sl) = (site.clone(), slot.clone());
    let ((before, after, percent), revision) = st
        .write(move |c| {
            c.update_doc(|doc| {
                let before = ramp::stop(doc, &s, &sl, &now())?;
                let after = doc.ramps[&s][&sl].clone();
                Ok((before, after, percent_of(&doc.state, &s, &sl)))
            })
        })
        .await?;
    if before.status.is_active() {
        let control = st.control.clone();
        let (id, held) = (
            before.operation_id.clone(),
            before.status == RampStatus::Holding,
        );
        let at = percent.unwrap_or(0.0);
        tokio::task::spawn_blocking(move || {
            control.update_operation(&id, |op| {
                op.add_phase(
                    PhaseName::Stop,
                    PhaseResult::Succeeded,
                    format!("stopped at {at}%"),
                );
                if held {
                    op.finish(Status::Succeeded, None);
                } else {
                    op.finish(Status::Cancelled, Some(format!("stopped at {at}%")));
                }
            })?;
            Ok::<_, crate::control::ControlError>(())
        })
        .await
        .map_err(ApiError::internal)??;
        crate::metrics::ramp_percent(&site, &slot, None);
        log::info!("admin: ramp of {site}/{slot} stopped at {at}%");
    }
    Ok(Json(Revised {
        revision,
        body: RampView::of(&site, &slot, &after, percent),
    }))
}
