//! Tokenizing chat data into `tokens` rows: masks on assistant tokens only, packing, overflow.

use firebrand_data::packing::dense_mask;
use firebrand_data::records::*;
use firebrand_data::template::{MaskMode, Template};
use firebrand_data::tokenize::{Overflow, TokenizeOptions, tokenize_dataset};
use firebrand_data::tokenizer::{TrainOptions, train_bpe};
use firebrand_data::{Dataset, DatasetKind, DatasetWriter, WriteMode};

fn chats() -> Vec<ChatRow> {
    (0..40)
        .map(|i| {
            let mut messages = vec![Message::new(Role::User, format!("question number {i}?"))];
            if i % 10 != 9 {
                messages.push(Message::new(Role::Assistant, "answer ".repeat(1 + i % 7)));
            }
            ChatRow {
                id: format!("c{i}"),
                messages,
                provenance: Provenance::from_source("t"),
            }
        })
        .collect()
}

fn options(pack: bool, max_len: usize, overflow: Overflow) -> TokenizeOptions {
    TokenizeOptions {
        template: Template::ChatMl,
        mask: MaskMode::Assistant,
        max_len,
        pack,
        overflow,
        chunk: 16,
        mode: WriteMode::Create,
        multiverse: false,
    }
}

#[test]
fn packed_rows_keep_every_mask_bit_and_never_attend_across_documents() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("chat.lance");
    let rows = chats();
    let mut w = DatasetWriter::create(&input, DatasetKind::Chat, WriteMode::Create).unwrap();
    w.write(&rows).unwrap();
    let input = w.commit().unwrap();
    let texts: Vec<String> = rows
        .iter()
        .flat_map(|r| r.messages.iter().map(|m| m.content.clone()))
        .collect();
    let tok = train_bpe(
        &texts,
        &TrainOptions {
            vocab_size: 400,
            min_frequency: 2,
            extra_special: Vec::new(),
        },
    )
    .unwrap();

    let plain_out = dir.path().join("plain.lance");
    let plain = tokenize_dataset(
        &input,
        &tok,
        &plain_out,
        &options(false, 512, Overflow::Truncate),
        |_| {},
    )
    .unwrap();
    let packed_out = dir.path().join("packed.lance");
    let packed = tokenize_dataset(&input, &tok, &packed_out, &options(true, 64, Overflow::Drop), |_| {}).unwrap();

    // 4 of 40 conversations have no assistant turn: dropped and counted.
    assert_eq!(plain.dropped.values().sum::<usize>(), 4);
    assert_eq!(plain.docs, 36);
    assert_eq!(
        packed.docs + packed.dropped.get("longer than max_len").copied().unwrap_or(0),
        36
    );
    assert!(packed.rows_out < packed.docs, "packing puts several documents in a row");

    let unpacked: Vec<TokensRow> = Dataset::open_kind(&plain_out, DatasetKind::Tokens)
        .unwrap()
        .read_all()
        .unwrap();
    let packed_rows: Vec<TokensRow> = Dataset::open(&packed_out).unwrap().read_all().unwrap();
    // Every packed document is its unpacked self: same ids, same mask bits.
    for row in &packed_rows {
        assert!(row.input_ids.len() <= 64);
        for (s, source) in row.source_ids.iter().enumerate() {
            let doc = unpacked.iter().find(|r| &r.source_ids[0] == source).unwrap();
            let idx: Vec<usize> = (0..row.input_ids.len())
                .filter(|&t| row.segment_ids[t] == s as i32)
                .collect();
            assert_eq!(idx.iter().map(|&t| row.input_ids[t]).collect::<Vec<_>>(), doc.input_ids);
            assert_eq!(idx.iter().map(|&t| row.loss_mask[t]).collect::<Vec<_>>(), doc.loss_mask);
            assert_eq!(
                idx.iter().map(|&t| row.position_ids[t]).collect::<Vec<_>>(),
                doc.position_ids
            );
        }
        let mask = dense_mask(row);
        for (q, keys) in mask.iter().enumerate() {
            for (k, &allowed) in keys.iter().enumerate() {
                assert!(!allowed || row.segment_ids[q] == row.segment_ids[k]);
            }
        }
    }
    // The trained tokens decode to exactly the assistant replies and their end tokens.
    let doc = &unpacked[0];
    let trained: Vec<u32> = doc
        .input_ids
        .iter()
        .zip(&doc.loss_mask)
        .filter(|(_, m)| **m)
        .map(|(i, _)| *i as u32)
        .collect();
    assert_eq!(
        tok.decode(&trained, false).unwrap(),
        format!("{}<|im_end|>", rows[0].messages[1].content)
    );
}

#[test]
fn truncation_that_removes_every_trained_token_drops_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("chat.lance");
    let rows = vec![ChatRow {
        id: "long".into(),
        messages: vec![
            Message::new(Role::User, "word ".repeat(100)),
            Message::new(Role::Assistant, "reply"),
        ],
        provenance: Provenance::from_source("t"),
    }];
    let mut w = DatasetWriter::create(&input, DatasetKind::Chat, WriteMode::Create).unwrap();
    w.write(&rows).unwrap();
    let input = w.commit().unwrap();
    let tok = train_bpe(
        &["word reply".into()],
        &TrainOptions {
            vocab_size: 300,
            min_frequency: 1,
            extra_special: Vec::new(),
        },
    )
    .unwrap();
    let out = dir.path().join("t.lance");
    let r = tokenize_dataset(&input, &tok, &out, &options(false, 16, Overflow::Truncate), |_| {}).unwrap();
    assert_eq!(r.dropped["no trained token left after truncation"], 1);
    assert_eq!(r.rows_out, 0);
    assert!(Dataset::open(&out).unwrap().is_empty().unwrap());
}

#[test]
fn tokenize_refuses_a_tokens_dataset_and_a_tokenizer_without_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tok.lance");
    let ds = DatasetWriter::create(&path, DatasetKind::Tokens, WriteMode::Create)
        .unwrap()
        .commit()
        .unwrap();
    let tok = train_bpe(
        &["a b".into()],
        &TrainOptions {
            vocab_size: 300,
            min_frequency: 1,
            extra_special: Vec::new(),
        },
    )
    .unwrap();
    let err = tokenize_dataset(
        &ds,
        &tok,
        &dir.path().join("o.lance"),
        &options(false, 8, Overflow::Drop),
        |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("reads chat, completion or multiverse"),
        "{err}"
    );
    let bare = firebrand_data::tokenizer::Tokenizer::new(tokenizers::ModelWrapper::BPE(Default::default()));
    let chat = dir.path().join("c.lance");
    let mut w = DatasetWriter::create(&chat, DatasetKind::Chat, WriteMode::Create).unwrap();
    w.write(&chats()[..1]).unwrap();
    let chat = w.commit().unwrap();
    let err = tokenize_dataset(
        &chat,
        &bare,
        &dir.path().join("o2.lance"),
        &options(false, 8, Overflow::Drop),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("<|im_start|>"), "{err}");
    assert!(!dir.path().join("o2.lance").exists());
}
