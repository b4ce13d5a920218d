"""Creates an SQS queue with a dead-letter queue (redrive after 5 receives) and prints its URL.

Usage: create-queue.py ENDPOINT NAME [VISIBILITY_SECONDS] [MAX_RECEIVES]. Uses boto3, which moto[server] installs. On AWS the
queues come from infrastructure code; this is for the local emulator.
"""
import json
import sys

import boto3

endpoint, name = sys.argv[1], sys.argv[2]
visibility = sys.argv[3] if len(sys.argv) > 3 else "30"
max_receives = sys.argv[4] if len(sys.argv) > 4 else "5"
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
queue = sqs.create_queue(QueueName=name, Attributes={
    "VisibilityTimeout": visibility,
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives}),
})["QueueUrl"]
print(queue)
