"""TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, one-vs-rest for multi-label."""

from __future__ import annotations

import numpy as np

from crossrec_cli.tasks.classifiers import CLASSIFIERS, ClassifyJob, Fitted


@CLASSIFIERS.register("tfidf_lr")
def fit(job: ClassifyJob) -> Fitted:
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.multiclass import OneVsRestClassifier  # type: ignore[import-untyped]
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]

    train = job.parts["train"]
    lr = LogisticRegression(max_iter=2000, C=10.0, random_state=job.settings.seed)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                          OneVsRestClassifier(lr) if job.multi_label else lr)
    model.fit([job.texts[i] for i in train], job.targets[train])
    scores = {}
    for split, idx in job.parts.items():
        if split == "train":
            continue
        prob = model.predict_proba([job.texts[i] for i in idx])
        if not job.multi_label:  # classes absent from a few-shot training set get probability 0
            full = np.zeros((len(idx), len(job.names)))
            full[:, model.classes_] = prob
            prob = full
        scores[split] = prob
    coef = model[-1]
    n_params = sum(e.coef_.size + e.intercept_.size for e in getattr(coef, "estimators_", [coef]))
    return Fitted(scores, trainable=int(n_params), total=int(n_params))
