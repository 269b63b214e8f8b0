//! `orderedmisbehave`: a test element that breaks the one-output-per-input contract of
//! `worker-bin` on purpose, on every `every`-th frame (by buffer offset: frame N of the source
//! is the same frame on whichever worker runs it): `mode=error` posts an error and returns
//! FLOW_ERROR, `nothing` outputs nothing, `double` outputs the frame twice, `hang` blocks until
//! [`release_hung`]. Other frames pass as they are.

// Each test crate that includes this uses what it needs of it.
#![allow(dead_code)]

use std::sync::{Condvar, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

static HUNG: LazyLock<(Mutex<bool>, Condvar)> =
    LazyLock::new(|| (Mutex::new(false), Condvar::new()));

/// Lets every frame blocked in `mode=hang` go (and any later one pass at once).
pub fn release_hung() {
    let (released, cond) = &*HUNG;
    *released.lock().unwrap() = true;
    cond.notify_all();
}

/// Registers the element (once per test binary).
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::Element::register(
            None,
            "orderedmisbehave",
            gst::Rank::NONE,
            Misbehave::static_type(),
        )
        .unwrap();
    });
}

glib::wrapper! {
    pub struct Misbehave(ObjectSubclass<imp::Misbehave>) @extends gst::Element, gst::Object;
}

mod imp {
    use super::*;

    #[derive(Default, Clone)]
    struct Settings {
        mode: String,
        every: u64,
    }

    pub struct Misbehave {
        sinkpad: gst::Pad,
        srcpad: gst::Pad,
        settings: Mutex<Settings>,
    }

    impl Misbehave {
        fn chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
            let s = self.settings.lock().unwrap().clone();
            let hit = s.every > 0 && buffer.offset() % s.every == s.every - 1;
            if !hit {
                return self.srcpad.push(buffer);
            }
            match s.mode.as_str() {
                "error" => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ("misbehaving on frame {}", buffer.offset())
                    );
                    Err(gst::FlowError::Error)
                }
                "nothing" => Ok(gst::FlowSuccess::Ok),
                "double" => {
                    self.srcpad.push(buffer.clone())?;
                    self.srcpad.push(buffer)
                }
                "hang" => {
                    let (released, cond) = &*HUNG;
                    let mut released = released.lock().unwrap();
                    while !*released {
                        released = cond.wait(released).unwrap();
                    }
                    drop(released);
                    self.srcpad.push(buffer)
                }
                _ => self.srcpad.push(buffer),
            }
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Misbehave {
        const NAME: &'static str = "GstOrderedMisbehave";
        type Type = super::Misbehave;
        type ParentType = gst::Element;

        fn with_class(klass: &Self::Class) -> Self {
            let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
                .chain_function(|_pad, parent, buffer| {
                    Misbehave::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |imp| imp.chain(buffer),
                    )
                })
                .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
                .build();
            let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
                .flags(gst::PadFlags::PROXY_CAPS)
                .build();
            Misbehave {
                sinkpad,
                srcpad,
                settings: Mutex::new(Settings::default()),
            }
        }
    }

    impl ObjectImpl for Misbehave {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("mode").build(),
                    glib::ParamSpecUInt64::builder("every").build(),
                ]
            });
            PROPS.as_ref()
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            let mut s = self.settings.lock().unwrap();
            match pspec.name() {
                "mode" => s.mode = value.get::<Option<String>>().unwrap().unwrap_or_default(),
                "every" => s.every = value.get().unwrap(),
                _ => unreachable!(),
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            let s = self.settings.lock().unwrap();
            match pspec.name() {
                "mode" => s.mode.to_value(),
                "every" => s.every.to_value(),
                _ => unreachable!(),
            }
        }

        fn constructed(&self) {
            self.parent_constructed();
            self.obj().add_pad(&self.sinkpad).unwrap();
            self.obj().add_pad(&self.srcpad).unwrap();
        }
    }

    impl GstObjectImpl for Misbehave {}

    impl ElementImpl for Misbehave {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "Misbehave",
                    "Filter",
                    "Breaks one output per input on purpose (tests)",
                    "gst-ordered",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = gst::Caps::new_any();
                vec![
                    gst::PadTemplate::new(
                        "sink",
                        gst::PadDirection::Sink,
                        gst::PadPresence::Always,
                        &caps,
                    )
                    .unwrap(),
                    gst::PadTemplate::new(
                        "src",
                        gst::PadDirection::Src,
                        gst::PadPresence::Always,
                        &caps,
                    )
                    .unwrap(),
                ]
            });
            TEMPLATES.as_ref()
        }
    }
}
