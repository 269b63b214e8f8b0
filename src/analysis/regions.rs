//! Moving blocks to at most `max_rois` rectangles: 8-connected groups of moving blocks give
//! bounding boxes; when there are more than `max_rois`, the largest ones absorb each of the
//! others into the nearest of them.

/// A rectangle in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A box in block units, inclusive.
#[derive(Clone, Copy, Debug)]
struct Boxed {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    blocks: u32,
}

impl Boxed {
    fn union(self, o: Boxed) -> Boxed {
        Boxed {
            x0: self.x0.min(o.x0),
            y0: self.y0.min(o.y0),
            x1: self.x1.max(o.x1),
            y1: self.y1.max(o.y1),
            blocks: self.blocks + o.blocks,
        }
    }

    /// Gap between two boxes (0 when they touch or overlap), in blocks, squared.
    fn distance_sq(&self, o: &Boxed) -> u64 {
        let dx = (o.x0.saturating_sub(self.x1)).max(self.x0.saturating_sub(o.x1)) as u64;
        let dy = (o.y0.saturating_sub(self.y1)).max(self.y0.saturating_sub(o.y1)) as u64;
        dx * dx + dy * dy
    }
}

pub(super) fn merge_moving_blocks(
    moving: &[bool],
    blocks_x: u32,
    blocks_y: u32,
    block: u32,
    width: u32,
    height: u32,
    max_rois: usize,
) -> Vec<Rect> {
    if max_rois == 0 || moving.is_empty() {
        return Vec::new();
    }
    let mut seen = vec![false; moving.len()];
    let mut boxes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..moving.len() {
        if !moving[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (sx, sy) = (start as u32 % blocks_x, start as u32 / blocks_x);
        let mut b = Boxed {
            x0: sx,
            y0: sy,
            x1: sx,
            y1: sy,
            blocks: 0,
        };
        while let Some(i) = stack.pop() {
            let (x, y) = (i as u32 % blocks_x, i as u32 / blocks_x);
            b = b.union(Boxed {
                x0: x,
                y0: y,
                x1: x,
                y1: y,
                blocks: 1,
            });
            // The 8 neighbours: a moving object's outline touches diagonally.
            for ny in y.saturating_sub(1)..=(y + 1).min(blocks_y - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(blocks_x - 1) {
                    let n = (ny * blocks_x + nx) as usize;
                    if moving[n] && !seen[n] {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
        }
        boxes.push(b);
    }
    // Largest first; ties by position, so the result does not depend on anything else.
    boxes.sort_by_key(|b| (std::cmp::Reverse(b.blocks), b.y0, b.x0));
    if boxes.len() > max_rois {
        let rest = boxes.split_off(max_rois);
        for r in rest {
            let nearest = (0..boxes.len())
                .min_by_key(|&i| (boxes[i].distance_sq(&r), i))
                .expect("max_rois > 0");
            boxes[nearest] = boxes[nearest].union(r);
        }
    }
    boxes
        .into_iter()
        .map(|b| {
            let x = b.x0 * block;
            let y = b.y0 * block;
            Rect {
                x,
                y,
                width: ((b.x1 + 1) * block).min(width) - x,
                height: ((b.y1 + 1) * block).min(height) - y,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> (Vec<bool>, u32, u32) {
        let cells = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        (cells, rows[0].len() as u32, rows.len() as u32)
    }

    #[test]
    fn connected_blocks_make_one_box_each() {
        let (m, bx, by) = grid(&["##....", "##...#", "......"]);
        let rois = merge_moving_blocks(&m, bx, by, 10, 60, 30, 8);
        assert_eq!(
            rois,
            vec![
                Rect {
                    x: 0,
                    y: 0,
                    width: 20,
                    height: 20
                },
                Rect {
                    x: 50,
                    y: 10,
                    width: 10,
                    height: 10
                }
            ]
        );
    }

    #[test]
    fn a_ring_of_blocks_touching_at_corners_is_one_region() {
        let (m, bx, by) = grid(&[".#.", "#.#", ".#."]);
        let rois = merge_moving_blocks(&m, bx, by, 10, 30, 30, 8);
        assert_eq!(
            rois,
            vec![Rect {
                x: 0,
                y: 0,
                width: 30,
                height: 30
            }]
        );
    }

    #[test]
    fn boxes_are_clipped_to_the_frame() {
        let (m, bx, by) = grid(&["..", ".#"]);
        let rois = merge_moving_blocks(&m, bx, by, 16, 25, 20, 8);
        assert_eq!(
            rois,
            vec![Rect {
                x: 16,
                y: 16,
                width: 9,
                height: 4
            }]
        );
    }

    #[test]
    fn extra_regions_merge_into_the_nearest_large_one() {
        let (m, bx, by) = grid(&["##.....#", "##......", "......#."]);
        let rois = merge_moving_blocks(&m, bx, by, 1, 8, 3, 2);
        assert_eq!(rois.len(), 2);
        assert_eq!(
            rois[0],
            Rect {
                x: 0,
                y: 0,
                width: 2,
                height: 2
            }
        );
        // The two single blocks: (7,0) is the second seed (ties by position), (6,2) joins it.
        assert_eq!(
            rois[1],
            Rect {
                x: 6,
                y: 0,
                width: 2,
                height: 3
            }
        );
    }
}
