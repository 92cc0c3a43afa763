"""The family registry: one row per head family the book has a page for, the single source that the stage
pages, the table of contents and the tests are checked against (and that the head atlas will run).

A row says where the family sits in the survey's four stages (Zheng et al. 2024), which papers found it, how
the page finds it (method, the experiment module whose ``study`` runs the page's steps, the screen score and
the rule fixed before looking), and which GPT-2 small heads the papers published (read from
``models.GPT2_SMALL_PUBLISHED_HEADS``, never copied). ``tests/test_registry.py`` fails when a page has no
row, a row has no page, or a stage page's table disagrees with a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from helpers import models
from helpers.experiments import (
    accuracy,
    acronyms,
    conflict,
    consistency,
    copy_suppression,
    duplicate,
    fact_sources,
    function_vectors,
    global_retrieval,
    in_context,
    induction,
    inhibition,
    iteration,
    mcq,
    mover,
    name_movers,
    positional,
    previous_token,
    rare_words,
    recall,
    retrieval,
    self_repair,
    semantic_induction,
    sentiment,
    subwords,
    successor,
    summary_reader,
    syntax,
    truthfulness,
    vulnerable,
    yesno,
)
from helpers.heads import Head

# The survey's stages, in its order, with the book page that introduces each (book/stages/<file>.md).
STAGES: dict[str, str] = {
    "Knowledge Recalling": "knowledge_recalling",
    "In-Context Identification": "in_context_identification",
    "Latent Reasoning": "latent_reasoning",
    "Expression Preparation": "expression_preparation",
}
# Pages that study a circuit of several families rather than one family.
CIRCUIT_PAGES = ("ioi_circuit",)
# Pages about every family at once (the head atlas runs the registry's screens on every head).
ATLAS_PAGES = ("head_atlas",)

_MCQ_SCORE = "share of END's attention over the four {what} that falls on the correct one"
_MCQ_FLOOR = "at least 10 % of END's attention on the {what}"


@dataclass(frozen=True)
class Family:
    """One head family: where the survey puts it, who found it, and how its page looks for it."""

    key: str  # snake_case id, also the key of its published GPT-2 small heads (when any)
    name: str  # as the stage page's table names it
    stage: str  # one of STAGES
    page: str  # notebooks/<page>.ipynb
    papers: tuple[str, ...]  # BibTeX keys in book/references.bib
    method: str
    experiment: ModuleType  # its `study(model, *, sizes, seed)` runs the page's steps
    score: str  # the screen score, per head
    rule: str  # the pass rule, fixed before looking
    published_key: str | None = None  # key in models.GPT2_SMALL_PUBLISHED_HEADS

    @property
    def published_gpt2_heads(self) -> tuple[Head, ...]:
        """The GPT-2 small heads the family's papers name (empty when they name none)."""
        if self.published_key is None:
            return ()
        return models.GPT2_SMALL_PUBLISHED_HEADS[self.published_key]


def _previous_token_rule() -> str:
    return (f"score >= {previous_token.THRESHOLD} and >= twice the head's own score on the control, "
            "on random tokens and on English prose")


FAMILIES: tuple[Family, ...] = (
    # Knowledge Recalling
    Family("associative_memory", "Associative memories", "Knowledge Recalling", "associative_memories",
           ("bietti2023birth", "dana2024memorization"), "toy transformer trained in the notebook; weight products",
           recall, "recall of stored pairs from a head's weight products (output, positional and key memories)",
           "recall above chance (1 / number of candidates); each role checked by zero-ablating its heads"),
    Family("memory", "Memory head", "Knowledge Recalling", "memory_heads", ("jin2024cutting",),
           "direct logit attribution, mean ablation against random heads", conflict,
           "DLA at the last position to logit[memory capital] - logit[context capital] on conflict prompts",
           "the top three by positive DLA; their mean ablation beats every draw of three heads from all heads"),
    Family("constant", "Constant head", "Knowledge Recalling", "constant_heads", ("lieberum2023chinchilla",),
           "attention entropy over the option labels, patching in a toy", mcq,
           "entropy of END's attention over the four labels, as a fraction of log 4",
           _MCQ_FLOOR.format(what="labels") + ", entropy >= 0.9, share on the correct label within 0.1 of 1/4"),
    Family("single_letter", "Single letter head", "Knowledge Recalling", "single_letter_heads",
           ("lieberum2023chinchilla",), "share of label attention on a fixed letter, patching in a toy", mcq,
           "share of label attention on the head's favourite letter, on prompts where that letter is wrong",
           _MCQ_FLOOR.format(what="labels") + " and more than 60 % of it on the favourite letter"),
    Family("negative", "Negative head", "Knowledge Recalling", "negative_heads", ("yu2024negative",),
           "negative attention score with an order-swap control, mean ablation against random heads", yesno,
           "negative attention score (NAS) of END's attention on 'No' against 'Yes'",
           "the top heads keep their NAS when the order is swapped and their ablation shrinks the bias more "
           "than every draw of as many heads"),
    # In-Context Identification
    Family("previous_token", "Previous head", "In-Context Identification", "previous_token_heads",
           ("olsson2022induction", "nanda2023factfinding"), "attention-pattern score, mean ablation",
           previous_token, "share of attention from each query to the key just before it (lower of two texts)",
           _previous_token_rule(), "previous_token"),
    Family("positional", "Positional head", "In-Context Identification", "positional_heads",
           ("voita2019analyzing", "raganato2018analysis", "ferrando2024information"),
           "argmax-offset histogram on random tokens and prose, mean ablation against random heads", positional,
           "share of queries whose strongest key lies in one fixed bin (offset 0-3 back or the first position), "
           "lower of random tokens and prose",
           f"the same fixed bin holds >= {positional.THRESHOLD:.0%} of the argmax choices on random tokens and on "
           "prose; the top three offset heads' mean ablation against 20 draws of three from all heads"),
    Family("duplicate", "Duplicate head", "In-Context Identification", "duplicate_heads", ("wang2023ioi",),
           "attention S2 -> S1 on IOI prompts and on planted repeats, mean ablation", duplicate,
           "attention from a repeated token to its first occurrence (lower of the two prompt kinds)",
           f"score >= {duplicate.THRESHOLD} and >= twice the head's own control score", "duplicate_token"),
    Family("subword_merge", "Subword merge head", "In-Context Identification", "subword_merge_heads",
           ("correia2019adaptively", "ferrando2024information"),
           "attention-pattern score against an offset-matched control, mean ablation vs random heads, held-out corpus",
           subwords, "attention from the last piece of each word of 3+ pieces to its first piece, minus attention at "
           "the same offset to an earlier word's first piece",
           f"score >= {subwords.THRESHOLD} and the lower end of the bootstrap 95 % interval over words above 0"),
    Family("syntactic", "Syntactic head", "In-Context Identification", "syntactic_heads",
           ("voita2019analyzing", "chen2024sudden"),
           "argmax attention on templated dependency arcs against a positional baseline, mean ablation of the top "
           "nsubj heads on subject-verb agreement against random heads, held-out relative clauses", syntax,
           "share of arcs (nsubj, dobj, det, amod) whose strongest attention from the dependent lands on its partner",
           f"accuracy >= the relation's positional baseline + {syntax.MARGIN} and the lower end of the 95 % "
           "bootstrap interval over prompts of the advantage above 0"),
    Family("rare_words", "Rare words head", "In-Context Identification", "rare_words_heads",
           ("voita2019analyzing",),
           "argmax-attention share on the rarest token against chance and a common-word control; mean ablation "
           "against random heads; held-out text family", rare_words,
           "share of queries after the rare word whose strongest attention (position 0 left out) lands on its "
           "least frequent piece", rare_words.RULE),
    Family("retrieval", "Retrieval head", "In-Context Identification", "retrieval_heads", ("wu2024retrieval",),
           "needle-in-a-haystack; retrieval score from greedy decoding; mean ablation against random heads, "
           "held-out haystacks", retrieval,
           "Wu et al.'s retrieval score (top-1 attention on the needle token generated next, averaged over "
           "recalled runs)", f"score >= {retrieval.THRESHOLD} and >= twice the head's one-key-back control"),
    Family("global_retrieval", "Global retrieval head", "In-Context Identification", "global_retrieval_heads",
           ("tang2024razorattention",),
           f"local-window mask (first token + {global_retrieval.WINDOW} tokens) on all other heads; needle recall "
           "with the top heads global against random global sets", global_retrieval,
           "needle recall with only G heads global (ranked by retrieval score)",
           "top-G recall above every random G set, p = (1 + draws at least as high) / (draws + 1)"),
    Family("sentiment_summarizer", "Sentiment summarizer", "In-Context Identification",
           "sentiment_summarizer_heads", ("tigges2023linear",),
           "mean-difference sentiment direction; each head's write along it at the summary positions against "
           "random directions; patching from the flipped review; directional ablation", sentiment,
           "largest shift along the sentiment direction of the head's output at the comma, period, "
           "' Conclusion' or ':'",
           f"above the {sentiment.NULL_QUANTILE:.0%} quantile of the head's own scores along "
           f"{sentiment.RANDOM_DIRECTIONS} random unit directions, and at least {sentiment.MIN_SHIFT:.0%} of the "
           "strongest head's score"),
    Family("semantic_induction", "Semantic induction head", "In-Context Identification",
           "semantic_induction_heads", ("ren2024semantic",),
           "relation index (attention-weighted entity write at END, read on the tail minus the relation's other "
           "tails), re-pairing permutation control, mean ablation against random heads", semantic_induction,
           "relation index",
           f"index > 0 and max-statistic corrected re-pairing p < {semantic_induction.ALPHA} "
           f"({semantic_induction.N_PERMUTATIONS} re-pairings)"),
    Family("subject", "Subject head", "In-Context Identification", "subject_heads", ("chughtai2024summing",),
           "direct logit attribution split by source position, mean ablation against random heads", fact_sources,
           "mean answer-DLA read from subject tokens",
           f"mean total >= {fact_sources.Rule().min_total} logits and more than {fact_sources.Rule().share:.0%} "
           "of it from the subject tokens"),
    Family("relation", "Relation head", "In-Context Identification", "relation_heads",
           ("chughtai2024summing", "yao2024knowledge"),
           "direct logit attribution split by source position, mean ablation against random heads", fact_sources,
           "mean answer-DLA read from relation tokens",
           f"mean total >= {fact_sources.Rule().min_total} logits and more than {fact_sources.Rule().share:.0%} "
           "of it from the relation words"),
    Family("name_mover", "Name mover head", "In-Context Identification", "name_mover_heads", ("wang2023ioi",),
           "direct logit attribution, attention from END, OV copying score, path patching", name_movers,
           "DLA at END on logit(IO) - logit(S)",
           "the top three by positive DLA among heads attending END -> IO more than END -> S", "name_mover"),
    Family("backup_name_mover", "Backup name mover head", "In-Context Identification",
           "backup_name_mover_heads", ("wang2023ioi",),
           "DLA before and after knocking out the name movers, knockouts of strong heads as control",
           self_repair, "rise of a head's DLA on logit(IO) - logit(S) after the name movers' knockout",
           "a rise larger than any head's rise after any control knockout of three strong heads",
           "backup_name_mover"),
    Family("negative_name_mover", "Negative name mover head", "In-Context Identification",
           "negative_name_mover_heads", ("wang2023ioi", "mcdougall2023copy"),
           "DLA at END, copy-suppression score on prose with a control token", copy_suppression,
           "DLA at END on logit(IO) - logit(S), and the direct effect on the attended token's centred logit",
           "most negative DLA while attending END -> IO more than END -> S; on prose, below every head's "
           "control score", "negative_name_mover"),
    Family("letter_mover", "Letter mover head", "In-Context Identification", "letter_mover_heads",
           ("garcia2024acronyms",), "attribution patching against the current-word twin, OV readings",
           acronyms, "logit difference a head carries (attribution patching to the current-word twin)",
           "the top four; exact patching of them removes more of the gap than every draw of four heads",
           "letter_mover"),
    Family("mover", "Mover head", "In-Context Identification", "mover_heads", ("yao2024knowledge",),
           "attention to the subject times DLA, nonce-subject control, mean ablation", mover,
           "attention from the last token to the subject times the head's DLA to the answer",
           "the top three; their mean ablation beats every draw of three heads from all heads"),
    Family("context", "Context head", "In-Context Identification", "context_heads", ("jin2024cutting",),
           "direct logit attribution, mean ablation against random heads", conflict,
           "DLA at the last position to logit[memory capital] - logit[context capital] on conflict prompts",
           "the top three by negative DLA; their mean ablation beats every draw of three heads from all heads"),
    Family("content_gatherer", "Content gatherer head", "In-Context Identification", "content_gatherer_heads",
           ("lieberum2023chinchilla", "merullo2024circuit"), "share of attention on the correct option's "
           "content with a decoy control, patching in a toy", mcq, _MCQ_SCORE.format(what="option contents"),
           _MCQ_FLOOR.format(what="contents") + ", more than 60 % of it on the correct one, above the 95th "
           "percentile of every head's share on a decoy"),
    # Latent Reasoning
    Family("summary_reader", "Summary reader", "Latent Reasoning", "summary_reader_heads", ("tigges2023linear",),
           "ToyMoodStory; attribution patching of each head's values at the summary positions from the "
           "swapped story; patching at END and by source route against random heads; held-out story frame",
           summary_reader,
           "estimated drop of the signed mood difference when the head's values at the summary positions "
           "(comma, period) come from the story with the characters' sentiments swapped",
           f"above the {summary_reader.NULL_QUANTILE:.0%} quantile of all heads' scores and at least "
           f"{summary_reader.MIN_SHARE:.0%} of the strongest"),
    Family("function_vector", "Function vector heads", "Latent Reasoning", "function_vector_heads",
           ("todd2024function",), "in-context tasks with a shuffled-label control; average indirect effect "
           "(first order, exact for the top heads) of each head's mean output at the last token; the summed "
           "function vector added to zero-shot prompts against random heads and another task's vector; "
           "held-out template and task", function_vectors,
           "average indirect effect: gain of P(answer) on shuffled-label prompts when the head's mean output "
           "at the last token over clean few-shot prompts is patched in (first order), averaged over tasks",
           f"the top {function_vectors.K} by AIE (as the paper); their summed output added to zero-shot prompts "
           "lifts top-1 accuracy more than every draw of as many heads from all heads"),
    Family("in_context", "In-context head", "Latent Reasoning", "in_context_heads", ("yu2024incontext",),
           "sentiment sentences labelled foo / bar in both mappings against shuffled labels; zero ablation of "
           "every head at END; top three against random heads; attention to the labels and effective-OV label "
           "copying; held-out frame", in_context,
           "drop of the signed label difference (logit of the demonstrated label minus the other) when the head "
           "is zero-ablated at the last position",
           f"above the {in_context.QUANTILE:.0%} quantile of all heads' drops and at least "
           f"{in_context.MIN_SHARE:.0%} of the largest"),
    Family("truthfulness", "Truthfulness head", "Latent Reasoning", "truthfulness_heads",
           ("li2023iti", "hoscilowicz2024nliti"),
           "true / false statements of facts the model knows (answers balanced, pairs differ only in the answer); a "
           "logistic probe per head at the statement's last token against shuffled labels; mass-mean direction "
           "added to the top heads on held-out facts against random directions and random heads", truthfulness,
           "2-fold cross-validated accuracy of a logistic probe on the head's output (hook_z) at the last token",
           f"accuracy >= {truthfulness.MIN_ACCURACY:.0%} and above the {truthfulness.QUANTILE:.0%} quantile of all "
           "heads' accuracies on shuffled labels; the family passes only if steering the top heads also beats "
           "both nulls on held-out facts"),
    Family("accuracy", "Accuracy head", "Latent Reasoning", "accuracy_heads",
           ("guo2024steering", "yin2024lofit"),
           "fact prompts the model gets partly right, labelled by whether its own answer is right and balanced "
           "per domain; a logistic probe per head at the last token against shuffled labels; the top 10 % "
           "steered along their right-minus-wrong direction, cross-fitted, against random directions and random "
           "heads; held-out question family", accuracy,
           "2-fold cross-validated accuracy of a logistic probe for right vs wrong answers on the head's output "
           "(hook_z) at the last token",
           f"accuracy >= {accuracy.MIN_ACCURACY:.0%} and above the {accuracy.QUANTILE:.0%} quantile of all "
           "heads' accuracies on shuffled labels; the family passes only if steering the top 10 % of heads also "
           "beats both nulls"),
    Family("consistency", "Consistency head", "Latent Reasoning", "consistency_heads", ("yang2024consistency",),
           "facts asked in a plain frame and a Q/A paraphrase, answers among the domain's candidates; items labelled "
           "consistent when the two answers agree; a logistic probe per head at the paraphrase's last token "
           "against shuffled labels; the consistent-minus-inconsistent mean added to the top heads on held-out "
           "items against random directions and random heads", consistency,
           "2-fold cross-validated accuracy of a logistic probe on the head's output (hook_z) at the paraphrase's "
           "last token, consistent vs inconsistent items",
           f"accuracy >= {consistency.MIN_ACCURACY:.0%} and above the {consistency.QUANTILE:.0%} quantile of all "
           "heads' accuracies on shuffled labels; the family passes only if injecting the bias into the top heads "
           "also raises held-out agreement beyond both nulls"),
    Family("vulnerable", "Vulnerable head", "Latent Reasoning", "vulnerable_heads", ("garcia2024vulnerable",),
           "acronym prompts of the letter-mover page; a seeded search of same-initial word substitutions that "
           "flip the third letter, a permutation test over letters; direct logit attribution of the flips; "
           "split-half concentration and END patching against random heads; held-out family", vulnerable,
           "drop of the head's direct logit attribution to logit[A3] - logit[takeover letter] at END, clean "
           "minus flipped, averaged over the flips",
           "the top four; chosen on half the flips they carry a larger share of the other half's summed |drop| "
           "than every draw of four heads from all heads, and their clean END outputs repair more flips' "
           "logit difference than every draw", "vulnerable"),
    Family("induction", "Induction head", "Latent Reasoning", "induction_heads", ("olsson2022induction",),
           "prefix-matching score on repeated random tokens, mean ablation, a toy trained from scratch", induction,
           "share of attention from a token to the key after its earlier occurrence (prefix matching)",
           f"score >= {induction.THRESHOLD} and >= twice the head's own score on the control", "induction"),
    Family("successor", "Successor head", "Latent Reasoning", "successor_heads", ("gould2024successor",),
           "effective OV circuit (block 0 -> head OV -> unembedding) against shuffled orders, mean ablation "
           "against random heads, held-out tasks", successor,
           "succession score: share of task tokens (digits, number words, days, months) whose top effective-OV "
           "output among the task's tokens is their successor",
           f"score above the {successor.QUANTILE:.0%} quantile, over shuffled orders, of the best head's score",
           "successor"),
    Family("inhibition", "Inhibition (suppression) head", "Latent Reasoning", "inhibition_heads",
           ("wang2023ioi", "kim2024syllogistic"), "path patching into the name movers' queries", inhibition,
           "shift of the name movers' attention (END -> S) - (END -> IO) when the head is path-patched alone",
           "a shift larger than every random single head's from the same layers", "s_inhibition"),
    Family("correct_letter", "Correct letter head", "Latent Reasoning", "correct_letter_heads",
           ("lieberum2023chinchilla",), "attention to the correct label at END, DLA, patching in a toy", mcq,
           _MCQ_SCORE.format(what="label tokens"),
           _MCQ_FLOOR.format(what="labels") + ", more than 60 % of it on the correct label, above the 95th "
           "percentile of every head's share on a decoy, and a positive DLA for the correct letter"),
    Family("iteration", "Iteration head", "Latent Reasoning", "iteration_heads", ("cabannes2024iteration",),
           "toy transformers trained in the notebook on parity with a chain of thought (five seeds); zero "
           "ablation of every head; held-out task", iteration,
           "share of attention from the position predicting state s_t on input x_t, against the same share on "
           "x_(t-1) and x_(t+1)",
           f"score >= {iteration.THRESHOLD} and >= {iteration.CONTROL_RATIO:g} times the larger shifted score"),
    # Expression Preparation
    Family("amplification", "Amplification head", "Expression Preparation", "amplification_heads",
           ("lieberum2023chinchilla",), "DLA of the correct letter with a decoy control, patching in a toy", mcq,
           "DLA at END on the correct letter minus the mean of the other three",
           "DLA above 0.1 and above the 95th percentile of every head's DLA for a decoy letter, with at least "
           "half of END's attention on the last three tokens"),
    Family("correct", "Correct head", "Expression Preparation", "correct_heads", ("wiegreffe2024answer",),
           "vocabulary projection of each layer's attention output, END-residual patching between formats", mcq,
           "each layer's attention output at END projected on the symbols: correct minus the mean of the others",
           "a layer whose attention carries most of the symbol logit difference in a sparse set of heads, "
           "in both label formats"),
)


def by_key(key: str) -> Family:
    """The family with this key; the error lists the keys there are."""
    for family in FAMILIES:
        if family.key == key:
            return family
    raise KeyError(f"no head family {key!r}; the registry has: {', '.join(f.key for f in FAMILIES)}")


def by_page(page: str) -> Family:
    """The family a page (notebook stem) is about."""
    for family in FAMILIES:
        if family.page == page:
            return family
    raise KeyError(f"no head family has the page {page!r}; pages: {', '.join(f.page for f in FAMILIES)}")


def in_stage(stage: str) -> tuple[Family, ...]:
    """The families of one stage, in the registry's order."""
    if stage not in STAGES:
        raise KeyError(f"no stage {stage!r}; the survey's stages are: {', '.join(STAGES)}")
    return tuple(family for family in FAMILIES if family.stage == stage)
