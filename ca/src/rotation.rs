//! The rotation schedule shared by the X.509 CA and the JWT signing keys.
//!
//! A set of slots (key generations): at most one prepared, one active and any number of retired
//! ones. The next slot is prepared at 1/2 of the active slot's lifetime (published at once, long
//! before it signs anything), activated at 5/6; a retired slot is pruned once nothing it signed
//! can still be in use. Both the [`CertificateAuthority`](crate::CertificateAuthority) and the
//! [`JwtKeyManager`](crate::jwt::JwtKeyManager) are a [`Rotation`] of their own slot type plus
//! what creates a slot ([`SlotMaker`]).

use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::SlotState;

/// Unix seconds of `t`, if representable.
pub(crate) fn unix_secs(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

/// Converts Unix seconds to a `SystemTime` (negative values clamp to the epoch).
pub(crate) fn system_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// One key generation, as the schedule sees it.
pub(crate) trait RotatingSlot {
    /// Public information about the slot.
    type Info;

    /// The slot's id (also its key file name).
    fn id(&self) -> &str;
    /// Prepared, active or retired.
    fn state(&self) -> SlotState;
    /// Starts signing.
    fn activate(&mut self);
    /// Stops signing at `now` (the key is dropped; the slot stays published).
    fn retire(&mut self, now: i64);
    /// Start of the slot's rotation timeline, Unix seconds.
    fn created_at(&self) -> i64;
    /// End of its lifetime: it never signs after this.
    fn not_after(&self) -> i64;
    /// Whether this (retired) slot can be dropped at `now`.
    fn prunable(&self, now: i64) -> bool;
    /// What the slot publishes (a trust anchor, a key ID); the sequence bumps when the set of
    /// published values changes.
    fn published(&self) -> &[u8];
    /// Public information about the slot (no key material).
    fn info(&self) -> Self::Info;

    /// When the next slot is prepared: half of this slot's lifetime.
    fn prepare_at(&self) -> i64 {
        self.created_at() + (self.not_after() - self.created_at()) / 2
    }

    /// When the next slot is activated: five sixths of this slot's lifetime.
    fn activate_at(&self) -> i64 {
        self.created_at() + (self.not_after() - self.created_at()) / 6 * 5
    }
}

/// Why a forced activation failed.
#[derive(Debug)]
pub(crate) enum RotationError {
    /// Nothing is prepared.
    NoPrepared,
    /// The prepared slot is past its lifetime.
    Expired { id: String, not_after: i64 },
}

/// Creates slots and deletes their key files.
pub(crate) trait SlotMaker {
    /// The slots it makes.
    type Slot: RotatingSlot;
    /// The error of its public API.
    type Error: From<RotationError>;
    /// What a slot is, in logs (`CA`, `JWT key`, `WIT key`).
    fn noun(&self) -> &'static str;

    /// Creates a new slot (key file written) in `state`.
    fn create_slot(&self, now: i64, state: SlotState) -> Result<Self::Slot, Self::Error>;
    /// Deletes a dropped slot's key file (a missing file is fine).
    fn delete_key_file(&self, id: &str);
}

/// What [`Rotation::rotate_if_due`] did.
#[derive(Debug)]
pub(crate) enum Rotated<I> {
    /// Nothing was due.
    Unchanged,
    /// A new slot was prepared (and published).
    Prepared(I),
    /// A slot was activated.
    Activated(I),
    /// The ids of the pruned slots.
    Pruned(Vec<String>),
}

/// The slots and the sequence of what they publish.
pub(crate) struct Slots<S> {
    pub(crate) slots: Vec<S>,
    pub(crate) sequence: u64,
}

impl<S: RotatingSlot> Slots<S> {
    pub(crate) fn active(&self) -> Option<&S> {
        self.slots.iter().find(|s| s.state() == SlotState::Active)
    }

    pub(crate) fn prepared(&self) -> Option<&S> {
        self.slots.iter().find(|s| s.state() == SlotState::Prepared)
    }

    /// The published values of every slot, oldest first, deduplicated.
    pub(crate) fn published(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let p = slot.published();
            if !out.iter().any(|o| o == p) {
                out.push(p.to_vec());
            }
        }
        out
    }

    /// Applies `f`, bumping the sequence when the published values changed.
    pub(crate) fn change<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.published();
        let r = f(self);
        if self.published() != before {
            self.sequence += 1;
        }
        r
    }

    /// Removes the slots `drop` selects; returns their ids.
    fn remove(&mut self, drop: impl Fn(&S) -> bool) -> Vec<String> {
        let (gone, keep): (Vec<S>, Vec<S>) = std::mem::take(&mut self.slots)
            .into_iter()
            .partition(|s| drop(s));
        self.slots = keep;
        gone.iter().map(|s| s.id().to_owned()).collect()
    }
}

/// Checks the slot states of a journal: exactly one active, at most one prepared. The error says
/// what is wrong, naming slots `noun` (`CA`, `key`).
pub(crate) fn check_journal_states(
    states: impl Iterator<Item = SlotState> + Clone,
    noun: &str,
) -> Result<(), String> {
    let count = |want: SlotState| states.clone().filter(|s| *s == want).count();
    let active = count(SlotState::Active);
    if active != 1 {
        return Err(format!(
            "expected exactly one active {noun}, found {active}"
        ));
    }
    if count(SlotState::Prepared) > 1 {
        return Err(format!("more than one prepared {noun}"));
    }
    Ok(())
}

/// The slots behind a lock, and the rotation steps. Reads take the read lock just long enough to
/// clone what they need; rotation is serialized and creates keys outside the lock.
pub(crate) struct Rotation<S> {
    state: RwLock<Slots<S>>,
    /// Serializes rotation so that two callers never prepare twice.
    serial: Mutex<()>,
}

impl<S: RotatingSlot> Rotation<S> {
    pub(crate) fn new(slots: Slots<S>) -> Self {
        Self {
            state: RwLock::new(slots),
            serial: Mutex::new(()),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Slots<S>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Slots<S>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a slot (the first one of a new journal).
    pub(crate) fn push(&self, slot: S) {
        self.write().change(|st| st.slots.push(slot));
    }

    /// Automatic rotation, at most one step per call (idempotent):
    ///
    /// 1. the active slot reached the end of its lifetime: activate the prepared slot if it is
    ///    still within its own, otherwise create and activate a new one at once (only after a
    ///    long outage);
    /// 2. at 5/6 of the active slot's lifetime, activate the prepared slot;
    /// 3. at 1/2, prepare the next slot;
    /// 4. drop prunable retired slots (and delete their key files).
    pub(crate) fn rotate_if_due<M: SlotMaker<Slot = S>>(
        &self,
        maker: &M,
        now: i64,
    ) -> Result<Rotated<S::Info>, M::Error> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        enum Step {
            Emergency,
            Activate,
            Prepare,
            Prune,
            Nothing,
        }
        let step = {
            let st = self.read();
            match st.active() {
                None => Step::Emergency,
                Some(active) if now >= active.not_after() => match st.prepared() {
                    Some(p) if now < p.not_after() => Step::Activate,
                    _ => Step::Emergency,
                },
                Some(active) => match st.prepared() {
                    Some(_) if now >= active.activate_at() => Step::Activate,
                    None if now >= active.prepare_at() => Step::Prepare,
                    _ if st.slots.iter().any(|s| prunable(s, now)) => Step::Prune,
                    _ => Step::Nothing,
                },
            }
        };
        match step {
            Step::Nothing => Ok(Rotated::Unchanged),
            Step::Activate => Ok(Rotated::Activated(self.activate_locked(now, maker.noun())?)),
            Step::Prepare => self.prepare_locked(maker, now).map(Rotated::Prepared),
            Step::Prune => {
                let pruned = self.write().change(|st| st.remove(|s| prunable(s, now)));
                for id in &pruned {
                    maker.delete_key_file(id);
                    tracing::info!(id = %id, "pruned retired {}", maker.noun());
                }
                Ok(Rotated::Pruned(pruned))
            }
            Step::Emergency => {
                let slot = maker.create_slot(now, SlotState::Active)?;
                let info = slot.info();
                let id = slot.id().to_owned();
                let dropped = self.write().change(|st| {
                    let dropped =
                        st.remove(|s| s.state() == SlotState::Prepared && now >= s.not_after());
                    for s in &mut st.slots {
                        if s.state() == SlotState::Active {
                            s.retire(now);
                        }
                    }
                    st.slots.push(slot);
                    dropped
                });
                for id in &dropped {
                    maker.delete_key_file(id);
                }
                tracing::warn!(id = %id, "the active {} had reached the end of its lifetime; activated a new one at once", maker.noun());
                Ok(Rotated::Activated(info))
            }
        }
    }

    /// Prepares the next slot now (published at once, signing nothing until activated),
    /// replacing an already prepared one.
    pub(crate) fn prepare<M: SlotMaker<Slot = S>>(
        &self,
        maker: &M,
        now: i64,
    ) -> Result<S::Info, M::Error> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        self.prepare_locked(maker, now)
    }

    fn prepare_locked<M: SlotMaker<Slot = S>>(
        &self,
        maker: &M,
        now: i64,
    ) -> Result<S::Info, M::Error> {
        let slot = maker.create_slot(now, SlotState::Prepared)?;
        let info = slot.info();
        let id = slot.id().to_owned();
        let replaced = self.write().change(|st| {
            let replaced = st.remove(|s| s.state() == SlotState::Prepared);
            st.slots.push(slot);
            replaced
        });
        for old in &replaced {
            maker.delete_key_file(old);
            tracing::info!(id = %old, "replaced prepared {}", maker.noun());
        }
        tracing::info!(id = %id, "prepared {} (published, not signing yet)", maker.noun());
        Ok(info)
    }

    /// Activates the prepared slot now; the active one is retired. Errors if nothing is prepared
    /// or the prepared slot is past its lifetime.
    pub(crate) fn activate<M: SlotMaker<Slot = S>>(
        &self,
        maker: &M,
        now: i64,
    ) -> Result<S::Info, M::Error> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        self.activate_locked(now, maker.noun())
            .map_err(M::Error::from)
    }

    fn activate_locked(&self, now: i64, noun: &str) -> Result<S::Info, RotationError> {
        let mut st = self.write();
        let Some(prepared) = st.prepared() else {
            return Err(RotationError::NoPrepared);
        };
        if now >= prepared.not_after() {
            return Err(RotationError::Expired {
                id: prepared.id().to_owned(),
                not_after: prepared.not_after(),
            });
        }
        let info = st.change(|st| {
            let mut info = None;
            for s in &mut st.slots {
                match s.state() {
                    SlotState::Active => s.retire(now),
                    SlotState::Prepared => {
                        s.activate();
                        info = Some((s.id().to_owned(), s.info()));
                    }
                    SlotState::Retired => {}
                }
            }
            info
        });
        drop(st);
        let (id, info) = info.ok_or(RotationError::NoPrepared)?;
        tracing::info!(id = %id, "activated {noun}");
        Ok(info)
    }
}

fn prunable<S: RotatingSlot>(slot: &S, now: i64) -> bool {
    slot.state() == SlotState::Retired && slot.prunable(now)
}
