"""Word starts and spans from tokens: the rule on hand-written pieces in both conventions (byte-level BPE's
"Ġ", SentencePiece's "▁"), on a hand-built SentencePiece tokenizer, on the real SmolLM2 tokenizer (through
the `tiny_smol` fixture) and, where its cache exists, the real Gemma tokenizer."""

from __future__ import annotations

import pytest
import torch

from helpers import model_cache, models, words

# "The unbelievableness of it all." in each convention, with the starts the rule gives
BYTE_LEVEL = ["The", "Ġunbelie", "v", "ab", "leness", "Ġof", "Ġit", "Ġall", "."]
SENTENCEPIECE = ["The", "▁unbeliev", "ableness", "▁of", "▁it", "▁all", "."]


def test_a_marked_piece_starts_a_word_and_an_unmarked_letter_piece_continues_it():
    assert words.starts_from_pieces(BYTE_LEVEL) == [True, True, False, False, False, True, True, True, True]
    assert words.starts_from_pieces(SENTENCEPIECE) == [True, True, False, True, True, True, True]


def test_punctuation_digits_newlines_and_apostrophes_stand_alone_and_end_a_word():
    pieces = ["Ġ(", "parent", "hes", "ised", ")", "Ġ", "1", "9", "8", "0", "Ċ", "Next", "Ġdon", "'t", "Ġfoo", "_",
              "bar"]
    starts = words.starts_from_pieces(pieces)
    assert starts == [True, True, False, False, True, True, True, True, True, True, True, True, True, True, True,
                      True, True]
    opens = [words.is_word_text(words.marker_text(p)) for p in pieces]
    spans = words.spans_from_starts(starts, opens)
    joined = ["".join(pieces[a:b]) for a, b in spans]
    assert joined == ["parenthesised", "Next", "Ġdon", "Ġfoo", "bar"]  # digits, "'t" and "_" are not words


def test_sentencepiece_newlines_and_double_spaces_start_words_too():
    pieces = ["\n\n", "▁▁", "ind", "ented", "▁text"]
    assert words.starts_from_pieces(pieces) == [True, True, True, False, True]


def test_special_tokens_never_join_a_word():
    assert words.starts_from_texts(["<bos>", "The", "re"], special=[True, False, False]) == [True, True, False]
    assert words.starts_from_texts(["ab", "cd"], special=[False, True]) == [True, True]


def test_spans_keep_only_words_of_enough_pieces():
    starts = words.starts_from_pieces(BYTE_LEVEL)
    opens = [words.is_word_text(words.marker_text(p)) for p in BYTE_LEVEL]
    assert words.spans_from_starts(starts, opens) == [(0, 1), (1, 5), (5, 6), (6, 7), (7, 8)]
    assert words.spans_from_starts(starts, opens, min_pieces=3) == [(1, 5)]


def test_inner_spans_drop_words_cut_by_the_window_edges():
    spans = [(0, 2), (2, 3), (3, 6), (6, 8)]
    assert words.inner_spans(spans, first=0, length=8) == [(2, 3), (3, 6)]
    assert words.inner_spans(spans, first=1, length=9) == [(2, 3), (3, 6), (6, 8)]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="one per token"):
        words.starts_from_texts(["a", "b"], special=[False])
    with pytest.raises(ValueError, match="starts\\[0\\] is False"):
        words.spans_from_starts([False, True], [True, True])
    with pytest.raises(ValueError, match="2 flags but is_word 1"):
        words.spans_from_starts([True, True], [True])
    with pytest.raises(ValueError, match="min_pieces"):
        words.spans_from_starts([True], [True], min_pieces=0)
    with pytest.raises(ValueError, match="a piece is a string"):
        words.marker_text(3)
    with pytest.raises(ValueError, match="model .* or a Hugging Face tokenizer"):
        words.word_starts(object(), torch.zeros(1, 2, dtype=torch.long))


@pytest.fixture(scope="module")
def sentencepiece_tokenizer(tmp_path_factory):
    """A Unigram tokenizer that writes spaces as "▁" and decodes them back like Gemma's (Replace, not
    Metaspace, so a single piece keeps its leading space)."""
    from tokenizers import Tokenizer, decoders, models as tok_models, normalizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    pieces = ["<bos>", "<unk>", "The", "▁unbeliev", "ableness", "▁of", "▁it", "▁all", ".", "a", "▁a", "▁"]
    core = Tokenizer(tok_models.Unigram([(piece, -1.0) for piece in pieces], unk_id=1))
    core.normalizer = normalizers.Replace(" ", "▁")
    core.decoder = decoders.Replace("▁", " ")
    folder = tmp_path_factory.mktemp("sentencepiece_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", unk_token="<unk>").save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def test_a_sentencepiece_tokenizer_gives_the_same_words(sentencepiece_tokenizer):
    tok = sentencepiece_tokenizer
    assert words.convention(tok) == "sentencepiece"
    ids = [tok.bos_token_id] + tok.encode("The unbelievableness of it all.", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == ["<bos>"] + SENTENCEPIECE
    tokens = torch.tensor([ids])
    assert words.word_starts(tok, tokens).tolist() == [[True, True, True, False, True, True, True, True]]
    assert words.word_spans(tok, tokens) == [[(1, 2), (2, 4), (4, 5), (5, 6), (6, 7)]]


def test_the_real_smollm2_tokenizer_splits_long_words_into_spans(tiny_smol):
    assert words.convention(tiny_smol) == "byte-level"
    text = "The unbelievableness of it all. He visited Czechoslovakia in 1980."
    tokens = torch.tensor([tiny_smol.tokenizer.encode(text, add_special_tokens=False)])
    pieces = tiny_smol.tokenizer.convert_ids_to_tokens(tokens[0].tolist())
    starts = words.word_starts(tiny_smol, tokens)[0].tolist()
    assert starts == words.starts_from_pieces(pieces)  # decoding and the markers agree on ASCII text
    spelled = ["".join(pieces[a:b]).replace("Ġ", " ").strip() for a, b in words.word_spans(tiny_smol, tokens)[0]]
    assert spelled == ["The", "unbelievableness", "of", "it", "all", "He", "visited", "Czechoslovakia", "in"]
    long = words.word_spans(tiny_smol, tokens, min_pieces=3)[0]
    assert [b - a for a, b in long] == [4]  # " unbelie|v|ab|leness"; Czechoslovakia is one token here


def test_a_word_level_tokenizer_makes_every_token_a_start(word_tokenizer):
    assert words.convention(word_tokenizer) == "word-level"
    tokens = torch.tensor([word_tokenizer.encode("When Mary and John went to the store", add_special_tokens=False)])
    assert words.word_starts(word_tokenizer, tokens).all()
    assert [b - a for a, b in words.word_spans(word_tokenizer, tokens)[0]] == [1] * 8


def test_the_real_gemma_tokenizer_marks_words_with_its_own_pieces():
    folder = model_cache.cache_folder(models.get_spec("gemma3-270m"))
    if not (folder / "tokenizer.json").exists():
        pytest.skip("Gemma 3 270M is not in the model cache on this machine")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert words.convention(tok) == "sentencepiece"
    ids = [tok.bos_token_id] + tok.encode("The unbelievableness of it all.", add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(ids)
    starts = words.word_starts(tok, torch.tensor([ids]))[0].tolist()
    assert starts[0] and starts[1:] == words.starts_from_pieces(pieces[1:])
    spans = words.word_spans(tok, torch.tensor([ids]))[0]
    assert ["".join(pieces[a:b]).replace("▁", "") for a, b in spans] == ["The", "unbelievableness", "of", "it", "all"]


def test_spelled_joins_the_pieces_of_a_word_and_separates_units(tiny_smol):
    ids = tiny_smol.tokenizer.encode("The unbelievableness of it, 1980.", add_special_tokens=False)
    assert words.spelled(tiny_smol, ids) == "The | unbelie·v·ab·leness | of | it | , | ␣ | 1 | 9 | 8 | 0 | ."
