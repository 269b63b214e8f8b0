//! Dynamic batching: frames of equal shape, from any worker (any member of a shared pool),
//! gathered into one request along the model's batch dimension, and the answer split back
//! per frame.
//!
//! A frame joins the open batch of its shape; the first frame of a batch starts a task on
//! the set's runtime that sends the batch once it is full or `batch-timeout` after it
//! opened, whichever comes first. Each frame's worker waits for its own slice of the answer
//! (or gives up alone, when its element flushes: the batch goes out for the others).
//!
//! Locks: `open` (the batches being filled) is taken before a batch's own lock, never the
//! other way round, and neither is held across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::set::{Answer, Image, Inner};
use super::tensor::element_count;
use super::{Data, Error, ErrorKind, ModelInfo, Request, Response, Tensor};
use crate::glue::lock;

/// The shape frames must share to go in one batch: height, width, channels.
type Shape = (usize, usize, usize);

type Reply = oneshot::Sender<Result<Answer, Error>>;

/// A batch being filled.
struct Filling {
    images: Vec<Image>,
    replies: Vec<Reply>,
}

struct Slot {
    batch: Mutex<Option<Filling>>,
    /// Told when the batch is full.
    full: Notify,
}

pub(super) struct Batcher {
    size: usize,
    timeout: Duration,
    open: Mutex<HashMap<Shape, Arc<Slot>>>,
    batches: AtomicU64,
    frames: AtomicU64,
}

/// Whether the model's first input has a batch dimension: 4 dimensions, the first `-1`.
pub(super) fn has_batch_dimension(info: &ModelInfo) -> bool {
    info.inputs
        .first()
        .is_some_and(|i| i.shape.len() == 4 && i.shape[0] == -1)
}

/// Why a model cannot take batches, for an error message.
pub(super) fn no_batch_dimension(info: &ModelInfo, size: usize) -> String {
    let shape = info
        .inputs
        .first()
        .map(|i| i.shape.clone())
        .unwrap_or_default();
    format!(
        "batch-size={size} needs a model whose first input has a batch dimension (4 \
         dimensions, the first -1); this model's first input is {shape:?}"
    )
}

impl Batcher {
    pub fn new(size: usize, timeout: Duration) -> Batcher {
        Batcher {
            size: size.max(1),
            timeout,
            open: Mutex::new(HashMap::new()),
            batches: AtomicU64::new(0),
            frames: AtomicU64::new(0),
        }
    }

    /// Requests sent and frames they carried.
    pub fn figures(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.frames.load(Ordering::Relaxed),
        )
    }

    /// Puts `image` into the open batch of its shape (opening one, and starting its sender,
    /// if there is none); the receiver gets the frame's own answer.
    pub fn join(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        runtime: &tokio::runtime::Runtime,
        image: Image,
    ) -> oneshot::Receiver<Result<Answer, Error>> {
        let (tx, rx) = oneshot::channel();
        let shape = (image.height, image.width, image.channels);
        let mut open = lock(&self.open);
        let slot = match open.get(&shape) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(Slot {
                    batch: Mutex::new(Some(Filling {
                        images: Vec::with_capacity(self.size),
                        replies: Vec::with_capacity(self.size),
                    })),
                    full: Notify::new(),
                });
                open.insert(shape, slot.clone());
                runtime.spawn(
                    self.clone()
                        .send_when_ready(inner.clone(), shape, slot.clone()),
                );
                slot
            }
        };
        let mut batch = lock(&slot.batch);
        let filling = batch.as_mut().expect("a slot in `open` is being filled");
        filling.images.push(image);
        filling.replies.push(tx);
        if filling.images.len() >= self.size {
            // Full: new frames open the next batch; the sender goes now.
            open.remove(&shape);
            slot.full.notify_one();
        }
        rx
    }

    async fn send_when_ready(self: Arc<Self>, inner: Arc<Inner>, shape: Shape, slot: Arc<Slot>) {
        tokio::select! {
            _ = slot.full.notified() => {}
            _ = tokio::time::sleep(self.timeout) => {}
        }
        let filling = {
            let mut open = lock(&self.open);
            if open.get(&shape).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                open.remove(&shape);
            }
            lock(&slot.batch).take()
        };
        let Some(Filling { images, replies }) = filling else {
            return;
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.frames
            .fetch_add(images.len() as u64, Ordering::Relaxed);
        let ids: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
        match inner.infer_batch(images, self.size).await {
            Ok(answer) => match split(&answer.response, &ids) {
                Ok(responses) => {
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok(Answer {
                            response,
                            server: answer.server.clone(),
                            hedged: false,
                        }));
                    }
                }
                Err(err) => {
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            },
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// One request for a batch of frames of equal shape: `[N, H, W, C]`, the frames' pixels one
/// after the other; its id names the first frame and how many follow.
pub(super) fn batch_request(
    images: Vec<Image>,
    info: &ModelInfo,
    size: usize,
) -> Result<Request, Error> {
    if !has_batch_dimension(info) {
        return Err(Error::new(
            ErrorKind::Rejected,
            no_batch_dimension(info, size),
        ));
    }
    let input = &info.inputs[0];
    let first = images.first().expect("a batch has a frame");
    let (h, w, c) = (
        first.height as i64,
        first.width as i64,
        first.channels as i64,
    );
    let shape = vec![images.len() as i64, h, w, c];
    if input
        .shape
        .iter()
        .zip(&shape)
        .skip(1)
        .any(|(&want, &have)| want >= 0 && want != have)
    {
        return Err(Error::new(
            ErrorKind::Rejected,
            format!(
                "the model's input shape {:?} does not fit a {}x{}x{} frame",
                input.shape, first.height, first.width, first.channels
            ),
        ));
    }
    let id = format!("{}+{}", first.id, images.len() - 1);
    let mut pixels = Vec::with_capacity(images.iter().map(|i| i.pixels.len()).sum());
    for image in &images {
        pixels.extend_from_slice(&image.pixels);
    }
    Ok(Request {
        id,
        inputs: vec![Tensor {
            name: input.name.clone(),
            datatype: "UINT8".into(),
            shape,
            data: Data::U8(pixels.into()),
        }],
    })
}

/// The answer to a batch split per frame: every output's first dimension must be the
/// batch's size; frame `i` gets slice `i` of each, with shape `[1, …]` (as in a batch of
/// one), and its own id.
pub(super) fn split(response: &Response, ids: &[String]) -> Result<Vec<Response>, Error> {
    let n = ids.len();
    let mut out: Vec<Response> = ids
        .iter()
        .map(|id| Response {
            id: id.clone(),
            outputs: Vec::with_capacity(response.outputs.len()),
        })
        .collect();
    for tensor in &response.outputs {
        if tensor.shape.first().copied() != Some(n as i64) {
            return Err(Error::new(
                ErrorKind::BadResponse,
                format!(
                    "output `{}` has shape {:?}, not a first dimension of {n} (the batch)",
                    tensor.name, tensor.shape
                ),
            ));
        }
        let per = element_count(&tensor.shape[1..])?;
        if tensor.data.len() != per * n {
            return Err(Error::new(
                ErrorKind::BadResponse,
                format!(
                    "output `{}` holds {} elements, not the {} its shape {:?} says",
                    tensor.name,
                    tensor.data.len(),
                    per * n,
                    tensor.shape
                ),
            ));
        }
        let mut shape = tensor.shape.clone();
        shape[0] = 1;
        for (i, frame) in out.iter_mut().enumerate() {
            frame.outputs.push(Tensor {
                name: tensor.name.clone(),
                datatype: tensor.datatype.clone(),
                shape: shape.clone(),
                data: tensor.data.slice(i * per..(i + 1) * per),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::TensorInfo;

    fn image(id: &str, value: u8) -> Image {
        Image {
            id: id.into(),
            height: 2,
            width: 3,
            channels: 1,
            pixels: vec![value; 6],
        }
    }

    fn model(shape: Vec<i64>) -> ModelInfo {
        ModelInfo {
            inputs: vec![TensorInfo {
                name: "frames".into(),
                datatype: "UINT8".into(),
                shape,
            }],
            outputs: Vec::new(),
        }
    }

    #[test]
    fn a_batch_request_stacks_the_frames_along_the_first_dimension() {
        let request = batch_request(
            vec![image("7", 1), image("8", 2)],
            &model(vec![-1, -1, -1, 1]),
            4,
        )
        .unwrap();
        assert_eq!(request.id, "7+1");
        let tensor = &request.inputs[0];
        assert_eq!(
            (tensor.name.as_str(), tensor.shape.as_slice()),
            ("frames", &[2, 2, 3, 1][..])
        );
        assert_eq!(
            tensor.data,
            Data::U8(vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2].into())
        );
    }

    #[test]
    fn a_model_without_a_batch_dimension_is_refused_with_its_shape() {
        let err = batch_request(vec![image("1", 0)], &model(vec![-1, -1, 3]), 8).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Rejected);
        assert!(err.message.contains("batch-size=8") && err.message.contains("[-1, -1, 3]"));
    }

    #[test]
    fn the_answer_is_split_by_the_first_dimension_into_batches_of_one() {
        let response = Response {
            id: "7+2".into(),
            outputs: vec![
                Tensor {
                    name: "sum".into(),
                    datatype: "UINT64".into(),
                    shape: vec![3],
                    data: Data::UInt(vec![10, 20, 30]),
                },
                Tensor {
                    name: "boxes".into(),
                    datatype: "FP32".into(),
                    shape: vec![3, 1, 2],
                    data: Data::Float(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                },
            ],
        };
        let ids: Vec<String> = ["7", "8", "9"].map(String::from).to_vec();
        let frames = split(&response, &ids).unwrap();
        assert_eq!(frames[1].id, "8");
        assert_eq!(frames[1].outputs[0].shape, vec![1]);
        assert_eq!(frames[1].outputs[0].data, Data::UInt(vec![20]));
        assert_eq!(frames[2].outputs[1].shape, vec![1, 1, 2]);
        assert_eq!(frames[2].outputs[1].data, Data::Float(vec![5.0, 6.0]));
        // An output that is not per frame cannot be split.
        let mut bad = response.clone();
        bad.outputs[0].shape = vec![1];
        bad.outputs[0].data = Data::UInt(vec![60]);
        assert_eq!(split(&bad, &ids).unwrap_err().kind, ErrorKind::BadResponse);
    }
}
