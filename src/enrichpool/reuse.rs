//! `carry-forward`: frames that `interval` or `only-label` keep from the servers carry the
//! results of the last frame sent before them, marked stale.
//!
//! ```text
//!  stream order:   S1   f   f   S2   f   f   (S: sent, f: skipped)
//!                  ▲────┴───┘   ▲────┴───┘   each f is linked, in the chain (in order), to
//!                                            the last S before it, if younger than the bound
//!  way out:  an f leaves with its S's results (EnrichmentMeta fields, detected regions),
//!            stale=true, age=ns; an f done before its S is held until the S is done (or
//!            lost: then it leaves bare, counted as carry-missed).
//! ```
//!
//! Links are made in the streaming thread, so in stream order; results are taken and held
//! frames released by the pusher, one output at a time. A frame waits for its source only
//! once it is done: no worker waits. A source is always submitted before the frames linked
//! to it, so it is output (or lost) before any serialized event that follows them: no held
//! frame is passed by an event. A flush forgets everything, held frames included (counted
//! as carry-flushed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::glue::lock;
use crate::meta::Enrichment;
use crate::pool::{Report, Tag};

/// A region as carried: type, rect (x, y, width, height), params.
pub(super) type CarriedRegion = (String, (u32, u32, u32, u32), Vec<gst::Structure>);

/// The results a source frame leaves to the frames linked to it.
#[derive(Debug, Clone)]
pub(super) struct Carried {
    pub enrichment: Option<Enrichment>,
    /// Regions with a `detection` param: type, rect, params.
    pub regions: Vec<CarriedRegion>,
}

impl Carried {
    /// What `buffer` (a source, as it leaves) carries forward: its `EnrichmentMeta` but for
    /// `rois` (whose ids name regions of this frame only), and the regions with a
    /// `detection` param that this element's steps added — those after the first `before`
    /// region metas (an earlier stage's detections are the frame's own, not carried).
    pub fn of(buffer: &gst::BufferRef, before: usize) -> Carried {
        let enrichment = Enrichment::read(buffer).and_then(Result::ok).map(|mut e| {
            e.outputs.remove_field("rois");
            e
        });
        Carried {
            enrichment,
            regions: buffer
                .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .skip(before)
                .filter(|m| m.param("detection").is_some())
                .map(|m| {
                    (
                        m.roi_type().to_string(),
                        m.rect(),
                        m.params().map(|p| p.to_owned()).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Puts the results on `buffer`, stale and `age` ns old: the EnrichmentMeta fields the
    /// frame does not have itself (with `stale` and `age`), and the regions, whose params get
    /// `stale` and `age` too.
    pub fn put_on(&self, buffer: &mut gst::BufferRef, age: u64) {
        if let Some(carried) = &self.enrichment {
            let own = Enrichment::read(buffer).and_then(Result::ok);
            let mut outputs = carried.outputs.clone();
            let mut enrichment = carried.clone();
            if let Some(own) = own {
                for (name, value) in own.outputs.iter() {
                    outputs.set_value(name, value.clone());
                }
                enrichment = Enrichment { outputs, ..own };
            } else {
                enrichment.outputs = outputs;
            }
            enrichment.outputs.set("stale", true);
            enrichment.outputs.set("age", age);
            // The carried outputs passed this check on their own frame.
            let _ = enrichment.add(buffer);
        }
        for (kind, rect, params) in &self.regions {
            // An id of this frame's: the source's may be taken here.
            let mut meta = super::regions::add_region(buffer, kind, *rect);
            for p in params {
                let mut p = p.clone();
                if p.name() == "detection" {
                    p.set("stale", true);
                    p.set("age", age);
                }
                meta.add_param(p);
            }
        }
    }
}

/// A frame done before its source, waiting for it.
pub(super) struct Held {
    pub buffer: gst::Buffer,
    pub tag: Tag,
    pub report: Report,
    pub age: u64,
    /// For the overlay.
    pub video: Option<std::sync::Arc<gst_video::VideoInfo>>,
    /// The caps it leaves with (`worker-bin`).
    pub caps: Option<gst::Caps>,
}

/// A frame to output now, with what to carry onto it (if anything).
pub(super) struct Release {
    pub buffer: gst::Buffer,
    pub tag: Tag,
    pub report: Report,
    pub carried: Option<(std::sync::Arc<Carried>, u64)>,
    pub video: Option<std::sync::Arc<gst_video::VideoInfo>>,
    pub caps: Option<gst::Caps>,
}

#[derive(Default)]
struct Source {
    running_time: u64,
    /// `None` until the source is output (or lost: `Some(None)`).
    results: Option<Option<std::sync::Arc<Carried>>>,
    held: Vec<Held>,
    /// Frames linked to it and not yet output or lost.
    links: usize,
    /// The last source of its stream: frames to come may still link to it.
    current: bool,
}

#[derive(Default)]
struct State {
    last: Option<Tag>,
    sources: HashMap<Tag, Source>,
    /// Frames linked and not yet output or lost, to their source.
    linked: BTreeMap<Tag, Tag>,
}

/// Counters of `carry-forward`, for `stats`.
#[derive(Debug, Default)]
pub(super) struct ReuseCounts {
    /// Frames that left with stale results.
    pub carried: AtomicU64,
    /// Frames skipped further than `carry-forward` from the last sent one.
    pub expired: AtomicU64,
    /// Frames whose source was lost (or had nothing to carry).
    pub missed: AtomicU64,
    /// Frames held for their source that a flush discarded.
    pub flushed: AtomicU64,
}

/// The links of one element's stream.
#[derive(Default)]
pub(super) struct Reuse {
    state: Mutex<State>,
    pub counts: ReuseCounts,
}

impl Reuse {
    /// Called in stream order for every frame while `carry-forward` is on: a `sent` frame
    /// becomes the source of those after it; another one is linked to the last source
    /// (returned with its age) if it is no older than `bound` ns. Without running times (a
    /// segment not in time) nothing is linked.
    pub fn link(
        &self,
        tag: Tag,
        running_time: Option<u64>,
        sent: bool,
        bound: u64,
    ) -> Option<(Tag, u64)> {
        let mut state = lock(&self.state);
        if sent {
            if let Some(last) = state.last.take() {
                Self::retire(&mut state, last);
            }
            let running_time = running_time?;
            state.sources.insert(
                tag,
                Source {
                    running_time,
                    current: true,
                    ..Source::default()
                },
            );
            state.last = Some(tag);
            return None;
        }
        let last = state.last.filter(|last| last.epoch == tag.epoch)?;
        let source = state.sources.get_mut(&last)?;
        let age = running_time?.checked_sub(source.running_time)?;
        if age > bound {
            self.counts.expired.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        source.links += 1;
        state.linked.insert(tag, last);
        Some((last, age))
    }

    /// A source frames no longer link to: forgotten once nothing waits on it.
    fn retire(state: &mut State, tag: Tag) {
        if let Some(source) = state.sources.get_mut(&tag) {
            source.current = false;
            if source.links == 0 {
                state.sources.remove(&tag);
            }
        }
    }

    /// A linked frame is done: it leaves now with its source's results (or bare, when the
    /// source was lost), or is held until its source is done (`None`).
    pub fn done_linked(&self, held: Held, source: Tag) -> Option<Release> {
        let mut state = lock(&self.state);
        state.linked.remove(&held.tag);
        let Some(entry) = state.sources.get_mut(&source) else {
            self.counts.missed.fetch_add(1, Ordering::Relaxed);
            return Some(Release::bare(held));
        };
        match entry.results.clone() {
            None => {
                entry.held.push(held);
                None
            }
            Some(results) => {
                entry.links -= 1;
                if entry.links == 0 && !entry.current {
                    state.sources.remove(&source);
                }
                Some(self.release(held, results))
            }
        }
    }

    /// A source is done (`Some`: its results) or lost (`None`): the frames held for it, to
    /// output now, in stream order.
    pub fn source_done(&self, tag: Tag, results: Option<Carried>) -> Vec<Release> {
        let mut state = lock(&self.state);
        let Some(entry) = state.sources.get_mut(&tag) else {
            return Vec::new();
        };
        let results = results.map(std::sync::Arc::new);
        entry.results = Some(results.clone());
        let mut held = std::mem::take(&mut entry.held);
        entry.links -= held.len();
        if entry.links == 0 && !entry.current {
            state.sources.remove(&tag);
        }
        drop(state);
        held.sort_by_key(|h| h.tag);
        held.into_iter()
            .map(|h| self.release(h, results.clone()))
            .collect()
    }

    /// Frames `first`.. (`count` of them) will never be output: a source among them is
    /// lost, a linked one no longer waits.
    pub fn lost(&self, first: Tag, count: u64) -> Vec<Release> {
        let end = Tag {
            epoch: first.epoch,
            seq: first.seq.saturating_add(count),
        };
        let (sources, unlinked): (Vec<Tag>, Vec<(Tag, Tag)>) = {
            let mut state = lock(&self.state);
            let unlinked: Vec<(Tag, Tag)> = state
                .linked
                .range(first..end)
                .map(|(&frame, &source)| (frame, source))
                .collect();
            for (frame, source) in &unlinked {
                state.linked.remove(frame);
                if let Some(entry) = state.sources.get_mut(source) {
                    entry.links -= 1;
                    if entry.links == 0 && !entry.current && entry.held.is_empty() {
                        state.sources.remove(source);
                    }
                }
            }
            let sources = state
                .sources
                .keys()
                .filter(|t| (first..end).contains(t))
                .copied()
                .collect();
            (sources, unlinked)
        };
        drop(unlinked);
        sources
            .into_iter()
            .flat_map(|s| self.source_done(s, None))
            .collect()
    }

    /// Forgets everything (a flush, a stop); returns how many held frames that discards.
    pub fn clear(&self) -> usize {
        let mut state = lock(&self.state);
        let held = state.sources.values().map(|s| s.held.len()).sum();
        *state = State::default();
        self.counts
            .flushed
            .fetch_add(held as u64, Ordering::Relaxed);
        held
    }

    pub fn reset_counts(&self) {
        for c in [
            &self.counts.carried,
            &self.counts.expired,
            &self.counts.missed,
            &self.counts.flushed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn release(&self, held: Held, results: Option<std::sync::Arc<Carried>>) -> Release {
        match results {
            Some(carried) => {
                self.counts.carried.fetch_add(1, Ordering::Relaxed);
                let age = held.age;
                Release {
                    carried: Some((carried, age)),
                    ..Release::bare(held)
                }
            }
            None => {
                self.counts.missed.fetch_add(1, Ordering::Relaxed);
                Release::bare(held)
            }
        }
    }
}

impl Release {
    fn bare(held: Held) -> Release {
        Release {
            buffer: held.buffer,
            tag: held.tag,
            report: held.report,
            carried: None,
            video: held.video,
            caps: held.caps,
        }
    }
}
