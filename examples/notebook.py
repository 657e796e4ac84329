# %% [markdown]
# # astrodask in a notebook
#
# The seed notebook of this project read a CSV with pandas and fitted scikit-learn's `LogisticRegression`.
# This one does the same with `astrodask.SDSSClassifier` — first in pandas, then on a Dask DataFrame across a
# LocalCluster's workers, then on an LSDB catalogue (a lazy HATS catalogue) that it classifies where it lives and
# cone-searches. Run it as a script (`python examples/notebook.py [WORKDIR]`) or open it as a notebook (the
# `# %%` cells are understood by Jupyter via jupytext, VS Code and PyCharm). The suite runs it
# (`tests/test_examples.py`).

# %%
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd

from astrodask import ClusterConfig, SDSSClassifier, classify, connect
from astrodask.synth import synth_partition

work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="astrodask-notebook-"))
work.mkdir(parents=True, exist_ok=True)
sample = files("astrodask.data") / "sdss_sample.csv"  # the embedded 20,000-row sample

if __name__ == "__main__":  # LocalCluster's worker processes re-import this file: keep the work behind the guard
    # %% [markdown]
    # ## 1. pandas, in this process

    # %%
    df = pd.read_csv(sample)
    train, test = df.iloc[:15000], df.iloc[15000:]
    clf = SDSSClassifier(max_iter=60).fit(train, train["class"])
    print(f"pandas: {clf.n_iter_} epochs, test accuracy {clf.score(test, test['class']):.4f}")
    print("first rows:", clf.predict(test.head(3)), clf.predict_proba(test.head(3)).round(3).tolist())

    # %% [markdown]
    # ## 2. The same rows as a Dask DataFrame, trained on the workers of a LocalCluster
    #
    # The rows stay on the workers: the client only receives statistics, gradient sums and weights.
    # Predictions are lazy, computed partition by partition.

    # %%
    with connect(ClusterConfig(n_workers=2), quiet=True) as client:
        ddf = dd.from_pandas(train, npartitions=4)
        dclf = SDSSClassifier(max_iter=60).fit(ddf, ddf["class"])
        lazy = dclf.predict(dd.from_pandas(test, npartitions=2))
        agree = float(np.mean(lazy.compute() == clf.predict(test)))
        print(f"dask: {dclf.n_iter_} epochs; agrees with the pandas fit on {agree:.1%} of the test rows")

        # %% [markdown]
        # ## 3. An LSDB catalogue: classify it where it lives, then cone-search the result
        #
        # Here the catalogue is made from a synthetic sample with hats-import; with real data, open a published
        # HATS catalogue instead (`lsdb.open_catalog("https://data.lsdb.io/...")`). Its columns are matched by
        # convert's rules (`objID`, `ra`, `modelMag_u`, `z_spec`...).

        # %%
        import lsdb
        from hats_import.catalog.arguments import ImportArguments
        from hats_import.pipeline import pipeline_with_client

        cat_df = synth_partition(3, 8000, seed=7).rename(columns={"obj_ID": "objID", "alpha": "ra", "delta": "dec"})
        cat_df.to_parquet(work / "catalogue.parquet")
        pipeline_with_client(ImportArguments(
            input_file_list=[str(work / "catalogue.parquet")], file_reader="parquet", ra_column="ra",
            dec_column="dec", output_path=str(work), output_artifact_name="catalogue", progress_bar=False,
            pixel_threshold=2000), client)
        catalogue = lsdb.open_catalog(work / "catalogue")
        classified = classify(catalogue, dclf)  # lazy: an LSDB catalogue with the prediction columns
        ra, dec = float(cat_df["ra"].iloc[0]), float(cat_df["dec"].iloc[0])
        cone = classified.cone_search(ra=ra, dec=dec, radius_arcsec=3 * 3600).compute()
        print(f"lsdb: {len(cone)} objects within 3 degrees of ({ra:.2f}, {dec:.2f}); predicted classes:",
              dict(cone["predicted_class"].value_counts()))
        print("saved model:", dclf.save(work / "model", overwrite=True))
