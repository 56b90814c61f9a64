"""Everything Kubeflow Pipelines needs, in one place; pipeline/kubeflow_runner.py is the command line.

- compile: the pipeline spec as open-source KFP v2 (or Vertex) runs it;
- entrypoint: every step's command in the pipeline image, under KFP's launcher contract;
- launcher: the parts of KFP's launcher (backend/src/v2/component/launcher_v2.go) both sides use;
- local_run: `run-local`, the compiled spec run here, each step in a container, artifacts in S3;
- object_store: an S3 API server on loopback (moto) and the launcher's copies to and from it;
- cron: schedules as KFP's API server and scheduled-workflow controller read them;
- Dockerfile, install.sh: the pipeline image.
"""
