//! A sticky event caught in a flush, for the elements' tests: a TAG event pushed while it
//! has to wait behind a frame, then a flush, and the tag seen downstream afterwards.

// Each test crate that includes this uses what it needs of it.
#![allow(dead_code)]

use gst::prelude::*;
use gst_check::Harness;

/// Pushes a TAG event whose title is `title`, then FLUSH_START and FLUSH_STOP.
pub fn push_tag_then_flush(h: &mut Harness, title: &str) {
    let mut tags = gst::TagList::new();
    tags.get_mut()
        .unwrap()
        .add::<gst::tags::Title>(&title, gst::TagMergeMode::Replace);
    assert!(h.push_event(gst::event::Tag::new(tags)));
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
}

/// The title of the TAG event sticky on the harness's sink pad (what reached downstream).
pub fn downstream_title(h: &Harness) -> String {
    let sticky = h
        .sinkpad()
        .unwrap()
        .sticky_event::<gst::event::Tag>(0)
        .expect("the tag reached downstream");
    sticky
        .tag()
        .get::<gst::tags::Title>()
        .unwrap()
        .get()
        .to_string()
}
