"""The claims lake in AWS: Parquet under ``lake/`` in the data bucket, a Glue database per stage for
its tables, and an Athena workgroup per stage for its queries (shared/adapters/lake.py, AthenaLake,
reaches them through awswrangler).

CloudFormation's definitions followed here:
- AWS::Glue::Database (DatabaseInput: Name, Description, LocationUri; CatalogId is the account):
  https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-glue-database.html
- AWS::Athena::WorkGroup (WorkGroupConfiguration: EnforceWorkGroupConfiguration,
  BytesScannedCutoffPerQuery, EngineVersion, ResultConfiguration with OutputLocation,
  EncryptionConfiguration SSE_KMS + KmsKey, ExpectedBucketOwner):
  https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-athena-workgroup.html
  and its WorkGroupConfiguration, ResultConfiguration and EncryptionConfiguration property pages.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import ATHENA_RESULTS_PREFIX, LAKE_PREFIX, StageConfig

# Pinned rather than AUTO: the lake's SQL is written and tested as Trino, which engine 3 runs.
ATHENA_ENGINE: Final = "Athena engine version 3"
# awswrangler's CTAS reads (query_chunks) create and drop Glue tables named temp_table_<uuid hex>
# (awswrangler/athena/_read.py, _resolve_query_without_cache).
CTAS_TEMP_TABLES: Final = "temp_table_*"

# What the jobs' lake calls need, and only that (awswrangler 3.17.1, read in its source; Athena's own
# calls on the caller's behalf from the Athena user guide):
# - wr.s3.to_parquet(dataset=True, database, table, mode=overwrite_partitions/append): glue:GetTable,
#   CreateTable (first write), UpdateTable (a training table's new column, a new description),
#   BatchCreatePartition; S3 ListObjectsV2 + DeleteObjects (the partition replaced) and PutObject
#   (catalog/_create.py, catalog/_add.py, s3/_write.py, s3/_write_dataset.py).
# - wr.s3.delete_objects (an emptied partition): ListObjectsV2, DeleteObjects.
# - wr.catalog.get_tables / get_parquet_partitions: glue:GetTables / glue:GetPartitions.
# - wr.athena.read_sql_query: athena:GetWorkGroup, StartQueryExecution, GetQueryExecution,
#   GetQueryResults, then S3 GetObject of the answer; with ctas_approach=True also glue:DeleteTable of
#   its temporary table (athena/_utils.py, athena/_executions.py). It never calls StopQueryExecution,
#   nor any other partition action (GetPartition, BatchGetPartition, CreatePartition, UpdatePartition,
#   DeletePartition, BatchDeletePartition): none is granted.
# - Athena itself, as the caller: glue:GetDatabase/GetTable/GetPartitions to plan, glue:CreateTable for
#   a CTAS table, GetDatabase on the catalog and the `default` database ("Configure access to
#   databases and tables in the AWS Glue Data Catalog"), S3 reads of the data and writes of results
#   (AbortMultipartUpload with PutObject on a result location, as AmazonAthenaFullAccess grants).
GLUE_READ: Final = ("glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:GetPartitions")
GLUE_WRITE: Final = ("glue:CreateTable", "glue:UpdateTable", "glue:BatchCreatePartition")
GLUE_DROP_TEMPORARY: Final = ("glue:DeleteTable",)
ATHENA_QUERY: Final = (
    "athena:GetWorkGroup",
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
)
LAKE_OBJECTS: Final = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
RESULT_OBJECTS: Final = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")
BUCKET_READ: Final = ("s3:ListBucket", "s3:GetBucketLocation")  # the former only under the two prefixes


class ClaimsLake(Construct):
    """The stage's Glue database and Athena workgroup over the data bucket, and what the SageMaker
    jobs (validate, evaluate, the drift job) need of them."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        bucket: s3.Bucket,
        key: kms.IKey,
        job_role: iam.IRole,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.database_name = config.lake_database
        self.workgroup_name = config.lake_workgroup
        self.root = f"s3://{bucket.bucket_name}/{LAKE_PREFIX}"
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=stack.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description="claims-risk claims lake: training claims, inferences, scored and rejected "
                "rows, outcomes, monitoring metrics (shared/lake.py)",
                location_uri=self.root,
            ),
        )
        self.database.apply_removal_policy(config.removal_policy)
        self.workgroup = athena.CfnWorkGroup(
            self,
            "Workgroup",
            name=self.workgroup_name,
            description="claims-risk lake queries: results encrypted under the data bucket",
            state="ENABLED",
            # A dev stack goes with its query history; prod keeps the workgroup (RETAIN) anyway.
            recursive_delete_option=config.removal_policy == RemovalPolicy.DESTROY,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,  # no client may move or unencrypt results
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=config.lake_bytes_scanned_cutoff,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version=ATHENA_ENGINE
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{bucket.bucket_name}/{ATHENA_RESULTS_PREFIX}",
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=key.key_arn
                    ),
                    expected_bucket_owner=stack.account,
                ),
            ),
        )
        self.workgroup.apply_removal_policy(config.removal_policy)
        # Results (and CTAS answers under tables/) are read once by the job that asked: they expire.
        # The lake's own prefix has no expiration rule: its partitions are replaced, never aged out.
        bucket.add_lifecycle_rule(
            id="athena-results",
            prefix=ATHENA_RESULTS_PREFIX,
            expiration=Duration.days(config.athena_results_days),
        )
        self.policy = iam.Policy(self, "JobAccess", statements=self._statements(stack, bucket))
        self.policy.attach_to_role(job_role)

    def _statements(self, stack: Stack, bucket: s3.IBucket) -> list[iam.PolicyStatement]:
        def glue_arn(resource: str, name: str | None = None) -> str:
            return stack.format_arn(service="glue", resource=resource, resource_name=name)

        catalog = stack.format_arn(service="glue", resource="catalog", arn_format=ArnFormat.NO_RESOURCE_NAME)
        database = glue_arn("database", self.database_name)
        tables = glue_arn("table", f"{self.database_name}/*")
        return [
            # Every Glue call names the catalog and the database as well as the table (ancestors).
            iam.PolicyStatement(
                sid="LakeCatalogRead", actions=list(GLUE_READ), resources=[catalog, database, tables]
            ),
            iam.PolicyStatement(
                sid="LakeCatalogWrite", actions=list(GLUE_WRITE), resources=[catalog, database, tables]
            ),
            iam.PolicyStatement(
                sid="LakeTemporaryTables",  # only CTAS answers are dropped, never a lake table
                actions=list(GLUE_DROP_TEMPORARY),
                resources=[catalog, database, glue_arn("table", f"{self.database_name}/{CTAS_TEMP_TABLES}")],
            ),
            iam.PolicyStatement(
                sid="AthenaDefaultDatabase",  # Athena looks up `default` with every catalog session
                actions=["glue:GetDatabase"],
                resources=[catalog, glue_arn("database", "default")],
            ),
            iam.PolicyStatement(
                sid="LakeQueries",
                actions=list(ATHENA_QUERY),
                resources=[
                    stack.format_arn(
                        service="athena", resource="workgroup", resource_name=self.workgroup_name
                    )
                ],
            ),
            iam.PolicyStatement(
                sid="LakeObjects",
                actions=list(LAKE_OBJECTS),
                resources=[bucket.arn_for_objects(f"{LAKE_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="LakeQueryResults",
                actions=list(RESULT_OBJECTS),
                resources=[bucket.arn_for_objects(f"{ATHENA_RESULTS_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="LakeListing",  # a partition's objects before they are replaced; Athena's scans
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{LAKE_PREFIX}*", f"{ATHENA_RESULTS_PREFIX}*"]}},
            ),
            iam.PolicyStatement(
                sid="LakeBucketRegion", actions=["s3:GetBucketLocation"], resources=[bucket.bucket_arn]
            ),
        ]
